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
    /// In how many paragraphs (about one chunk each) each word appears.
    df: Vec<u32>,
    paragraphs: u32,
    seen: Vec<u32>,
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
        let n = vocab.len();
        Corpus {
            vocab,
            rng,
            df: vec![0; n],
            paragraphs: 0,
            seen: vec![u32::MAX; n],
        }
    }

    /// A word, frequent ones far more often (rank ~ u^2.5).
    fn word(&mut self) -> &str {
        let u = self.rng.unit();
        let i = ((self.vocab.len() as f64) * u.powf(2.5)) as usize;
        let i = i.min(self.vocab.len() - 1);
        if self.seen[i] != self.paragraphs {
            self.seen[i] = self.paragraphs;
            self.df[i] += 1;
        }
        &self.vocab[i]
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
            self.paragraphs += 1;
        }
        (title, text)
    }

    /// Questions of three words, each found in 0.5 % to 5 % of the paragraphs written so
    /// far (a topical word, not a near-stopword): each question matches a few hundred
    /// chunks. Returns the questions and the mean of the sum of their terms' chunk counts.
    pub fn questions(&mut self, n: usize) -> (Vec<String>, f64) {
        let total = f64::from(self.paragraphs.max(1));
        let band: Vec<usize> = (0..self.vocab.len())
            .filter(|&i| {
                let f = f64::from(self.df[i]) / total;
                (0.005..=0.05).contains(&f)
            })
            .collect();
        if band.is_empty() {
            return (vec!["What do the documents say?".to_owned()], 0.0);
        }
        let mut matched = 0.0;
        let questions = (0..n)
            .map(|_| {
                let picks: Vec<usize> = (0..3).map(|_| band[self.rng.below(band.len())]).collect();
                matched += picks.iter().map(|&i| f64::from(self.df[i])).sum::<f64>();
                let words: Vec<&str> = picks.iter().map(|&i| self.vocab[i].as_str()).collect();
                // No word of the template is in the corpus: "documents" would match every
                // chunk's title ("Synthetic document N") and rank the whole corpus.
                format!("What is known about {}?", words.join(" and "))
            })
            .collect();
        (questions, matched / n as f64)
    }
}
