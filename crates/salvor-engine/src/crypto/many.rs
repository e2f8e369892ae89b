//! Keyed BLAKE3 of many small blobs side by side.
//!
//! BLAKE3 hashes a message's 1 KiB leaves in parallel SIMD lanes (16 with
//! AVX-512). A stream's chunks (4 KiB target, ~7 KB mean on a SQL dump) have
//! only four to eight leaves, so `keyed_hash` ran those lanes a quarter to
//! half full and hashing was ~15% of a dump backup's CPU. Here leaf `c` of up to every blob in a batch goes through one
//! `hash_many` call, which fills the lanes: twice as fast on dump chunks.
//!
//! Written by hand because the blake3 crate has no public API for it: its
//! `platform` module is documented as unstable, so the crate is pinned to an
//! exact version in the workspace, and the tests compare the result with
//! `blake3::keyed_hash` for every length up to 9 KiB.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use blake3::platform::{Platform, words_from_le_bytes_32};

const LEAF: usize = blake3::CHUNK_LEN;
// Domain flags of the BLAKE3 specification (section 2.1).
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const KEYED_HASH: u8 = 16;

/// Blobs at least this long already fill the SIMD lanes on their own.
const WIDE: usize = 16 * LEAF;

/// Sets `out[i]` to `blake3::keyed_hash(key, blobs[i])` for every blob.
pub(crate) fn keyed_hash_many(key: &[u8; 32], blobs: &[&[u8]], out: &mut Vec<[u8; 32]>) {
    out.clear();
    if blobs.len() < 2 {
        // A lone blob (each small file) gains nothing from the batch set-up.
        out.extend(blobs.iter().map(|b| *blake3::keyed_hash(key, b).as_bytes()));
        return;
    }
    out.resize(blobs.len(), [0; 32]);
    // Blobs hashed here have `full` whole leaves before a last, possibly
    // partial, one; their leaf chaining values sit at `first[i]..` in `cvs`.
    let full = |b: &[u8]| (b.len() - 1) / LEAF;
    let batched = |b: &[u8]| b.len() > LEAF && b.len() < WIDE;
    let mut first = vec![usize::MAX; blobs.len()];
    let mut total = 0;
    let mut max_full = 0;
    for (i, b) in blobs.iter().enumerate() {
        if batched(b) {
            first[i] = total;
            total += full(b) + 1;
            max_full = max_full.max(full(b));
        } else {
            out[i] = *blake3::keyed_hash(key, b).as_bytes();
        }
    }
    if total == 0 {
        return;
    }
    let platform = Platform::detect();
    let key_words = words_from_le_bytes_32(key);
    let mut cvs = vec![[0u8; 32]; total];
    let mut leaves: Vec<&[u8; LEAF]> = Vec::with_capacity(blobs.len());
    let mut slots = Vec::with_capacity(blobs.len());
    let mut hashed = vec![0u8; 32 * blobs.len()];
    for c in 0..max_full {
        leaves.clear();
        slots.clear();
        for (i, b) in blobs.iter().enumerate() {
            if batched(b) && c < full(b) {
                leaves.push(b[c * LEAF..(c + 1) * LEAF].try_into().expect("one leaf"));
                slots.push(first[i] + c);
            }
        }
        let out_bytes = &mut hashed[..32 * leaves.len()];
        // Every leaf here has the same index `c`, so one counter serves all.
        platform.hash_many(
            &leaves,
            &key_words,
            c as u64,
            blake3::IncrementCounter::No,
            KEYED_HASH,
            CHUNK_START,
            CHUNK_END,
            out_bytes,
        );
        for (j, &slot) in slots.iter().enumerate() {
            cvs[slot].copy_from_slice(&out_bytes[32 * j..32 * j + 32]);
        }
    }
    for (i, b) in blobs.iter().enumerate() {
        if !batched(b) {
            continue;
        }
        let n = full(b);
        let mut last = blake3::Hasher::new_keyed(key);
        last.set_input_offset((n * LEAF) as u64);
        last.update(&b[n * LEAF..]);
        let leaves = &mut cvs[first[i]..=first[i] + n];
        leaves[n] = last.finalize_non_root();
        out[i] = *root(leaves, key).as_bytes();
    }
}

/// The root hash over two or more leaf chaining values.
fn root(cvs: &[ChainingValue], key: &[u8; 32]) -> blake3::Hash {
    let (left, right) = halves(cvs, key);
    merge_subtrees_root(&left, &right, Mode::KeyedHash(key))
}

/// The chaining value of a subtree of one or more leaves.
fn subtree(cvs: &[ChainingValue], key: &[u8; 32]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = halves(cvs, key);
    merge_subtrees_non_root(&left, &right, Mode::KeyedHash(key))
}

/// BLAKE3's tree shape: the left subtree holds the largest power of two of
/// leaves that leaves at least one for the right.
fn halves(cvs: &[ChainingValue], key: &[u8; 32]) -> (ChainingValue, ChainingValue) {
    let n = cvs.len();
    let split = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
    (subtree(&cvs[..split], key), subtree(&cvs[split..], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn check(key: &[u8; 32], blobs: &[&[u8]]) {
        let mut out = Vec::new();
        keyed_hash_many(key, blobs, &mut out);
        assert_eq!(out.len(), blobs.len());
        for (b, h) in blobs.iter().zip(&out) {
            assert_eq!(
                h,
                blake3::keyed_hash(key, b).as_bytes(),
                "length {}",
                b.len()
            );
        }
    }

    #[test]
    fn equals_keyed_hash_for_every_length() {
        let d = data(80_000);
        let key = [7u8; 32];
        for len in 0..9 * 1024 {
            let blobs: Vec<&[u8]> = (0..3).map(|o| &d[o * 11..o * 11 + len]).collect();
            check(&key, &blobs);
        }
    }

    #[test]
    fn equals_keyed_hash_for_mixed_batches() {
        let d = data(2_000_000);
        let mut x = 99u64;
        let mut pos = 0;
        let mut blobs: Vec<&[u8]> = Vec::new();
        // Far more than 16 blobs, of lengths across every path (tiny,
        // batched, wide), so partial SIMD groups are covered too.
        for _ in 0..300 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = [0, 1, 1024, 1025, 4096, 16 * 1024 - 1, 16 * 1024, 70_000]
                [(x >> 60) as usize % 8]
                .max((x >> 40) as usize % 20_000);
            blobs.push(&d[pos..pos + len]);
            pos = (pos + len) % 1_000_000;
        }
        check(&[3u8; 32], &blobs);
        check(&[0u8; 32], &blobs[..17]);
        check(&[1u8; 32], &blobs[2..3]);
        check(&[1u8; 32], &[]);
    }
}
