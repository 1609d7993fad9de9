//! Deterministic test data and a fast streaming hash, so bulk transfers can be checked end to end
//! without keeping 100 MB in memory.

/// A streaming 64-bit hash over a byte stream, independent of how the stream is chunked.
/// Word-at-a-time multiply–rotate: not cryptographic, but any lost, repeated, reordered or
/// flipped byte changes it.
#[derive(Debug, Clone)]
pub(crate) struct Hash64 {
    state: u64,
    carry: [u8; 8],
    carried: usize,
    len: u64,
}

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;

impl Default for Hash64 {
    fn default() -> Self {
        Self {
            state: K2,
            carry: [0; 8],
            carried: 0,
            len: 0,
        }
    }
}

impl Hash64 {
    /// A fresh hash.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn word(&mut self, w: u64) {
        self.state = (self.state ^ w.wrapping_mul(K1))
            .rotate_left(29)
            .wrapping_mul(K2);
    }

    /// Feeds the next bytes of the stream.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.carried > 0 {
            let take = (8 - self.carried).min(data.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&data[..take]);
            self.carried += take;
            data = &data[take..];
            if self.carried < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.carry));
            self.carried = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().unwrap()));
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    /// Bytes fed so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The hash of everything fed, including its length.
    pub(crate) fn finish(&self) -> u64 {
        let mut h = self.clone();
        let mut last = [0u8; 8];
        last[..h.carried].copy_from_slice(&h.carry[..h.carried]);
        h.word(u64::from_le_bytes(last));
        h.word(h.len);
        h.state ^ (h.state >> 31)
    }

    /// The hash of one buffer.
    pub(crate) fn of(data: &[u8]) -> u64 {
        let mut h = Self::new();
        h.update(data);
        h.finish()
    }
}

/// An endless pseudo-random byte stream from a seed (splitmix64).
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    state: u64,
}

impl Pattern {
    /// The stream for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(K1);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with the next bytes of the stream (`buf.len()` a multiple of 8 keeps two
    /// streams with the same seed aligned however they are chunked).
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let last = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&last[..n]);
        }
    }

    /// `len` bytes of the stream for `seed`.
    pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        Self::new(seed).fill(&mut buf);
        buf
    }
}

#[test]
fn hash_ignores_chunking_and_sees_changes() {
    let data = Pattern::bytes(7, 10_007);
    let whole = Hash64::of(&data);
    let mut pieces = Hash64::new();
    for chunk in data.chunks(13) {
        pieces.update(chunk);
    }
    assert_eq!(pieces.finish(), whole);
    let mut flipped = data.clone();
    flipped[5000] ^= 1;
    assert_ne!(Hash64::of(&flipped), whole);
    assert_ne!(Hash64::of(&data[..10_006]), whole);
}
