//! Metric chunks as read from the database (`metrics::chunk::decode`): any
//! bytes give samples or an error, never a panic or a huge allocation; what
//! decodes encodes back to the same bytes' samples.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_backend::metrics::chunk;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(samples) = chunk::decode(bytes) {
        let again = chunk::decode(&chunk::encode(&samples)).expect("a chunk encode wrote");
        assert_eq!(again.len(), samples.len());
        for (a, b) in again.iter().zip(&samples) {
            assert_eq!((a.collected_at, a.seq), (b.collected_at, b.seq));
            assert_eq!(a.cpu_percent.to_bits(), b.cpu_percent.to_bits());
            assert_eq!(a.filesystems, b.filesystems);
            assert_eq!(a.network, b.network);
        }
    }
});
