//! Stop strings over a stream of text deltas: a pure matcher, no I/O.
//!
//! A stop string can be split across deltas (`"<|e"` then `"nd|>"`), so text that could be
//! the start of one is held back until the next delta settles it. What the caller sees is
//! exactly the answer cut before the first stop string, whatever the deltas' boundaries.

/// What one delta gives the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Text that is surely part of the answer (possibly empty: all of it is held back).
    Text(String),
    /// A stop string was found: the answer's last text, before it. Nothing follows.
    Stopped(String),
}

/// Matches stop strings across deltas.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet given out: a suffix that could begin a stop string.
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Takes the next delta.
    pub fn push(&mut self, delta: &str) -> Step {
        if self.stops.is_empty() {
            return Step::Text(delta.to_owned());
        }
        let mut text = std::mem::take(&mut self.held);
        text.push_str(delta);
        let first_stop = self.stops.iter().filter_map(|stop| text.find(stop)).min();
        if let Some(at) = first_stop {
            text.truncate(at);
            return Step::Stopped(text);
        }
        let keep = self.partial_suffix(&text);
        self.held = text.split_off(text.len() - keep);
        Step::Text(text)
    }

    /// The stream ended without a stop string: the held-back text is part of the answer.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The length of the longest suffix of `text` that is a proper prefix of a stop string.
    fn partial_suffix(&self, text: &str) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                // Proper prefixes only: a whole stop string would have been found.
                (1..stop.len().min(text.len() + 1))
                    .rev()
                    .filter(|&len| stop.is_char_boundary(len))
                    .find(|&len| text.ends_with(&stop[..len]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `deltas`, returning the answer and whether a stop string ended it.
    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut matcher = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for delta in deltas {
            match matcher.push(delta) {
                Step::Text(text) => out.push_str(&text),
                Step::Stopped(text) => {
                    out.push_str(&text);
                    return (out, true);
                }
            }
        }
        out.push_str(&matcher.finish());
        (out, false)
    }

    #[test]
    fn no_stops_passes_everything_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn a_stop_within_one_delta_cuts_there() {
        assert_eq!(run(&["END"], &["abcENDdef", "more"]), ("abc".into(), true));
    }

    #[test]
    fn a_stop_across_deltas_is_found() {
        assert_eq!(
            run(&["<|end|>"], &["hi <|e", "nd", "|> no"]),
            ("hi ".into(), true)
        );
    }

    #[test]
    fn a_false_start_is_released() {
        let mut matcher = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(matcher.push("abST"), Step::Text("ab".into()));
        assert_eq!(matcher.push("x"), Step::Text("STx".into()));
        assert_eq!(matcher.finish(), "");
        assert_eq!(run(&["STOP"], &["ab", "STO"]), ("abSTO".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), true));
        assert_eq!(
            run(&["\n\n", "\n"], &["one\n", "\ntwo"]),
            ("one".into(), true)
        );
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
        assert_eq!(run(&["éa"], &["xé", "b"]), ("xéb".into(), false));
    }

    #[test]
    fn any_split_of_the_text_gives_the_same_answer() {
        let text = "the answer is 42<stop> and more";
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(run(&["<stop>"], &[a, b]), ("the answer is 42".into(), true));
        }
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(run(&["<nope>"], &[a, b]), (text.into(), false));
        }
    }
}
