//! A synthetic corpus for the retrieval figure: Markdown documents of pseudo-words with a
//! skewed (Zipf-like) word frequency, so that a question's terms match many chunks and
//! BM25 has real ranking work to do. Deterministic: the same seed gives the same corpus.

/// xorshift64*: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// No `b` and no `_`: no word can spell the request-id prefix or the token marker.
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ru", "te", "sa", "no", "vi", "pe", "zo", "da", "fi", "gu", "ha", "je", "xu",
    "ro", "li", "ma", "ne", "so", "tu", "wa", "yo", "ce", "di", "fo", "ga", "hu", "ki",
];

pub struct Corpus {
    pub vocab: Vec<String>,
    rng: Rng,
}

impl Corpus {
    pub fn new(seed: u64, words: usize) -> Corpus {
        let mut rng = Rng::new(seed);
        let mut vocab = Vec::with_capacity(words);
        let mut seen = std::collections::HashSet::new();
        while vocab.len() < words {
            let n = 2 + rng.below(3);
            let w: String = (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            if seen.insert(w.clone()) {
                vocab.push(w);
            }
        }
        Corpus { vocab, rng }
    }

    /// A word, frequent ones far more often (rank ~ u^2.5).
    fn word(&mut self) -> &str {
        let u = self.rng.unit();
        let i = ((self.vocab.len() as f64) * u.powf(2.5)) as usize;
        &self.vocab[i.min(self.vocab.len() - 1)]
    }

    fn sentence(&mut self, out: &mut String) {
        let n = 8 + self.rng.below(10);
        for j in 0..n {
            let w = self.word().to_owned();
            if j == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    out.extend(f.to_uppercase());
                    out.push_str(c.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(&w);
            }
        }
        out.push_str(". ");
    }

    /// A document of about `paragraphs` paragraphs of ~800 characters (the hub cuts
    /// chunks of ~900 characters, so about one chunk per paragraph).
    pub fn document(&mut self, n: usize, paragraphs: usize) -> (String, String) {
        let title = format!("Synthetic document {n}");
        let mut text = format!("# {title}\n\n");
        for p in 0..paragraphs {
            if p % 10 == 0 {
                let h = self.word().to_owned();
                text.push_str(&format!("## Section {h} {p}\n\n"));
            }
            let start = text.len();
            while text.len() - start < 780 {
                self.sentence(&mut text);
            }
            text.push_str("\n\n");
        }
        (title, text)
    }

    /// Questions of three moderately frequent words: each matches many chunks.
    pub fn questions(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let words: Vec<String> = (0..3)
                    .map(|_| {
                        let i = 20 + self.rng.below(280);
                        self.vocab[i.min(self.vocab.len() - 1)].clone()
                    })
                    .collect();
                format!("What do the documents say about {}?", words.join(" and "))
            })
            .collect()
    }
}
