//! The online sources' state survives a restart in embedded mode.

use attune_core::rules::Surface;
use attune_core::{EventKind, Timestamp};
use attune_engine::{CandidateSource, OnlineConfig, OnlineSources, RecContext};

use crate::support::{T0, iid, sid};

fn next_after(online: &OnlineSources, item: &str) -> Vec<String> {
    let recent = [iid(item)];
    let ctx = RecContext {
        surface: Surface::Next,
        session_id: None,
        recent: &recent,
        anchors: &recent,
        intents: &[],
        now: Timestamp::from_millis(T0 + 10_000),
    };
    let mut out = Vec::new();
    for source in [
        &*online.cooccurrence as &dyn CandidateSource,
        &*online.session_knn,
        &*online.trending,
    ] {
        for p in source.candidates(&ctx, 10, &|_| true).expect("candidates") {
            out.push(format!("{}:{}:{:.4}", source.name(), p.item_id, p.score));
        }
    }
    out
}

#[test]
fn snapshots_are_written_at_save_and_read_back_at_open() {
    let dir = std::env::temp_dir().join(format!("attune-online-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = OnlineConfig {
        state_dir: Some(dir.clone()),
        ..OnlineConfig::default()
    };
    let online = OnlineSources::open(&config).unwrap();
    let session = sid("a");
    let items = ["espresso-beans", "filter-coffee", "bbq-chips"].map(iid);
    for (i, item) in items.iter().enumerate() {
        let earlier: Vec<_> = items[..i]
            .iter()
            .map(|x| (EventKind::View, x.clone()))
            .collect();
        let o = attune_engine::Observation {
            session_id: &session,
            kind: EventKind::View,
            item_id: item,
            quantity: 1,
            at: Timestamp::from_millis(T0 + i as i64 * 1000),
            earlier: &earlier,
        };
        online.trending.observe(&o);
        online.cooccurrence.observe(&o);
        online.session_knn.observe(&o);
    }
    let before = next_after(&online, "espresso-beans");
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("cooccurrence:filter-coffee")),
        "{before:?}"
    );
    for s in [
        &*online.trending as &dyn CandidateSource,
        &*online.cooccurrence,
        &*online.session_knn,
    ] {
        s.save().unwrap();
    }
    let reopened = OnlineSources::open(&config).unwrap();
    assert_eq!(next_after(&reopened, "espresso-beans"), before);

    // A damaged snapshot is set aside and the source starts empty, never refusing to start.
    std::fs::write(dir.join("trending.bin"), b"\x01garbage").unwrap();
    let damaged = OnlineSources::open(&config).unwrap();
    assert!(
        !next_after(&damaged, "espresso-beans")
            .iter()
            .any(|l| l.starts_with("trending"))
    );
    assert!(dir.join("trending.bad").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_seed_written_by_training_starts_sources_that_then_keep_their_own_state() {
    let root = std::env::temp_dir().join(format!("attune-online-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (seed_dir, state_dir) = (root.join("seed"), root.join("state"));

    // What `attune train --model online` does: seed whole sessions, write the snapshots.
    let trained = OnlineSources::open(&OnlineConfig::default()).unwrap();
    let sessions = [
        ["espresso-beans", "filter-coffee"].map(iid).to_vec(),
        ["espresso-beans", "filter-coffee", "oat-milk"]
            .map(iid)
            .to_vec(),
    ];
    trained.seed_sessions(
        sessions.iter().map(Vec::as_slice),
        Timestamp::from_millis(T0),
    );
    trained.write_to(&seed_dir).unwrap();
    let seeded_answer = next_after(&trained, "espresso-beans");
    assert!(
        seeded_answer
            .iter()
            .any(|l| l.starts_with("cooccurrence:filter-coffee")),
        "{seeded_answer:?}"
    );

    // The server starts from the seed; its own state goes to the state directory.
    let config = OnlineConfig {
        state_dir: Some(state_dir.clone()),
        seed_dir: Some(seed_dir.clone()),
        ..OnlineConfig::default()
    };
    let served = OnlineSources::open(&config).unwrap();
    assert_eq!(next_after(&served, "espresso-beans"), seeded_answer);
    let o = attune_engine::Observation {
        session_id: &sid("live"),
        kind: EventKind::View,
        item_id: &iid("bbq-chips"),
        quantity: 1,
        at: Timestamp::from_millis(T0 + 5_000),
        earlier: &[(EventKind::View, iid("espresso-beans"))],
    };
    served.cooccurrence.observe(&o);
    served.cooccurrence.save().unwrap();
    let seed_before = std::fs::read(seed_dir.join("cooccurrence.bin")).unwrap();
    // A restart reads its own state first (the live pair is kept), never the seed again.
    let restarted = OnlineSources::open(&config).unwrap();
    let after = next_after(&restarted, "espresso-beans");
    assert!(
        after
            .iter()
            .any(|l| l.starts_with("cooccurrence:bbq-chips")),
        "{after:?}"
    );
    assert_eq!(
        std::fs::read(seed_dir.join("cooccurrence.bin")).unwrap(),
        seed_before,
        "the seed is never written"
    );

    // A seed asked for but missing is an error naming the file, not a silent empty start.
    let missing = OnlineConfig {
        seed_dir: Some(root.join("nowhere")),
        ..OnlineConfig::default()
    };
    let err = OnlineSources::open(&missing)
        .err()
        .expect("a missing seed fails");
    assert!(err.reason.contains("trending.bin"), "{}", err.reason);
    let _ = std::fs::remove_dir_all(&root);
}
