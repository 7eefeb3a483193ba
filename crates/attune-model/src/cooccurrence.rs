//! The co-occurrence model: item-to-item counts within a session window.
