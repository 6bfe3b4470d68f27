//! Any bytes as a webhook body or an audit log file: decoding, normalizing and building the Arrow
//! batch never panic, and every event read is accounted for (a record, a dropped stage or a
//! rejection).

#![no_main]

use kubestep_ingest::normalize::NormalizeConfig;
use kubestep_ingest::prepare::prepare;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    // A small object limit, so that the stub path is reached too.
    let config = NormalizeConfig { max_object_bytes: 512, ..NormalizeConfig::default() };
    let Ok(prepared) = prepare("fuzz", body, &config) else { return };
    let rows = prepared.records.as_ref().map_or(0, |b| b.num_rows());
    assert_eq!(rows, prepared.keys.len(), "one de-duplication key per record");
    let kept = rows as u64 + prepared.dropped_by_stage.values().sum::<u64>();
    assert!(kept <= prepared.events_read, "{kept} kept of {} read", prepared.events_read);
    assert!(
        prepared.events_read <= kept + prepared.rejections.len() as u64,
        "{} read, {kept} kept, {} rejected",
        prepared.events_read,
        prepared.rejections.len()
    );
});
