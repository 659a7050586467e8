#![allow(clippy::unwrap_used)]

use super::*;

fn limits(
    max_batch: usize,
    step_tokens: usize,
    prefill_chunk: usize,
    max_adapters: usize,
) -> ScheduleLimits {
    ScheduleLimits {
        max_batch,
        step_tokens,
        prefill_chunk,
        max_adapters,
    }
}

fn seq(id: SeqId, prompt_len: usize, max_tokens: usize, adapter: Option<u8>) -> Admission {
    Admission {
        id,
        prompt_len,
        max_tokens,
        adapter: adapter.map(|b| [b; 32]),
    }
}

fn ids(step: &Step) -> Vec<(SeqId, usize, usize, bool)> {
    step.slots
        .iter()
        .map(|s| (s.id, s.start, s.len, s.wants_logits))
        .collect()
}

/// Runs the scheduler to the end with every sequence going on until its limit, checking
/// the step invariants; returns the steps.
fn drain(s: &mut Scheduler) -> Vec<Step> {
    let mut steps = Vec::new();
    while !s.is_empty() {
        let step = s.plan();
        assert!(!step.is_empty(), "a non-empty scheduler always plans work");
        let l = s.limits();
        assert!(step.slots.len() <= l.max_batch);
        assert!(step.tokens() <= l.step_tokens);
        s.advance(&step, |_| Outcome::Continue);
        steps.push(step);
        assert!(steps.len() < 10_000, "no progress");
    }
    steps
}

#[test]
fn a_lone_sequence_prefills_in_chunks_then_decodes_one_token_a_step() {
    let mut s = Scheduler::new(limits(8, 64, 4, 4)).unwrap();
    s.admit(seq(1, 10, 3, None)).unwrap();
    let steps = drain(&mut s);
    let got: Vec<_> = steps.iter().map(ids).collect();
    assert_eq!(
        got,
        vec![
            vec![(1, 0, 4, false)],
            vec![(1, 4, 4, false)],
            // The prompt ends here: its last row's logits give token 1.
            vec![(1, 8, 2, true)],
            // Token 1 goes in at position 10, token 2 at 11; token 3 is the limit and is
            // never fed back.
            vec![(1, 10, 1, true)],
            vec![(1, 11, 1, true)],
        ]
    );
}

#[test]
fn decoders_go_first_and_a_long_prompt_never_stalls_them() {
    let mut s = Scheduler::new(limits(8, 6, 4, 4)).unwrap();
    s.admit(seq(1, 2, 100, None)).unwrap();
    let step = s.plan();
    s.advance(&step, |_| Outcome::Continue);
    // A 1,000-token prompt arrives while 1 decodes.
    s.admit(seq(2, 1000, 1, None)).unwrap();
    for _ in 0..50 {
        let step = s.plan();
        assert_eq!(
            step.slots[0].id, 1,
            "the decoder keeps its token every step"
        );
        assert_eq!(step.slots[0].len, 1);
        assert_eq!(step.tokens(), 5, "the rest of the budget, within one chunk");
        s.advance(&step, |_| Outcome::Continue);
    }
}

#[test]
fn new_sequences_join_the_running_batch_at_the_next_step_and_leave_when_done() {
    let mut s = Scheduler::new(limits(8, 64, 64, 4)).unwrap();
    s.admit(seq(1, 3, 4, None)).unwrap();
    let step = s.plan();
    s.advance(&step, |_| Outcome::Continue);
    s.admit(seq(2, 5, 2, None)).unwrap();
    let step = s.plan();
    assert_eq!(ids(&step), vec![(1, 3, 1, true), (2, 0, 5, true)]);
    let left = s.advance(&step, |_| Outcome::Continue);
    assert!(left.is_empty());
    let step = s.plan();
    assert_eq!(ids(&step), vec![(1, 4, 1, true), (2, 5, 1, true)]);
    // 2 reaches its limit of 2 tokens; 1 ends on an end-of-sequence token.
    let left = s.advance(&step, |id| {
        if id == 1 {
            Outcome::Finished
        } else {
            Outcome::Continue
        }
    });
    assert_eq!(left, vec![1, 2]);
    assert!(s.is_empty());
    assert!(s.plan().is_empty());
}

#[test]
fn extra_adapters_wait_for_a_later_step_in_their_turn_and_are_never_refused() {
    let mut s = Scheduler::new(limits(16, 256, 256, 2)).unwrap();
    for (id, adapter) in [
        (1, Some(1)),
        (2, Some(2)),
        (3, Some(3)),
        (4, Some(1)),
        (5, None),
    ] {
        s.admit(seq(id, 4, 3, adapter)).unwrap();
    }
    let step = s.plan();
    // Adapters 1 and 2 fill the step's two places; 3 waits; 4 shares adapter 1; 5 uses none.
    let in_step: Vec<SeqId> = step.slots.iter().map(|s| s.id).collect();
    assert_eq!(in_step, vec![1, 2, 4, 5]);
    let mut seen_3 = None;
    let steps = {
        s.advance(&step, |_| Outcome::Continue);
        drain(&mut s)
    };
    for (i, step) in steps.iter().enumerate() {
        let distinct: BTreeSet<_> = step
            .slots
            .iter()
            .filter_map(|slot| {
                [(1, 1), (2, 2), (3, 3), (4, 1)]
                    .iter()
                    .find(|(id, _)| *id == slot.id)
            })
            .map(|(_, a)| a)
            .collect();
        assert!(distinct.len() <= 2, "step {i} holds {distinct:?}");
        if seen_3.is_none() && step.slots.iter().any(|slot| slot.id == 3) {
            seen_3 = Some(i);
        }
    }
    assert!(seen_3.is_some(), "the sequence with the third adapter ran");
}

#[test]
fn batch_and_budget_limits_hold_and_everyone_finishes_with_its_tokens() {
    let mut s = Scheduler::new(limits(3, 7, 3, 2)).unwrap();
    let mut want = std::collections::BTreeMap::new();
    for id in 0..20u64 {
        let prompt = 1 + (id as usize * 7) % 11;
        let max = 1 + (id as usize * 5) % 6;
        let adapter = (id % 4 != 0).then_some((id % 5) as u8);
        want.insert(id, (prompt, max));
        s.admit(seq(id, prompt, max, adapter)).unwrap();
    }
    let steps = drain(&mut s);
    // Every prompt position went in exactly once, in order, and every sequence sampled
    // exactly its tokens.
    for (id, (prompt, max)) in want {
        let mine: Vec<&Slot> = steps
            .iter()
            .flat_map(|st| &st.slots)
            .filter(|s| s.id == id)
            .collect();
        let mut next = 0;
        let mut sampled = 0;
        for slot in mine {
            assert_eq!(slot.start, next, "sequence {id}");
            next += slot.len;
            sampled += usize::from(slot.wants_logits);
        }
        assert_eq!(next, prompt + max - 1, "sequence {id}");
        assert_eq!(sampled, max, "sequence {id}");
    }
}

#[test]
fn cancelled_sequences_leave_at_once_even_mid_step() {
    let mut s = Scheduler::new(ScheduleLimits::default()).unwrap();
    s.admit(seq(1, 4, 10, None)).unwrap();
    s.admit(seq(2, 4, 10, None)).unwrap();
    let step = s.plan();
    assert!(s.cancel(2));
    assert!(!s.cancel(2));
    s.advance(&step, |_| Outcome::Continue);
    assert_eq!(s.len(), 1);
    assert!(s.plan().slots.iter().all(|slot| slot.id == 1));
}

#[test]
fn bad_admissions_and_limits_are_refused_with_the_range() {
    let mut s = Scheduler::new(ScheduleLimits::default()).unwrap();
    assert_eq!(
        s.admit(seq(1, 0, 1, None)).unwrap_err(),
        "the prompt is empty"
    );
    assert_eq!(
        s.admit(seq(1, 3, 0, None)).unwrap_err(),
        "max tokens must be at least 1"
    );
    s.admit(seq(1, 3, 1, None)).unwrap();
    assert_eq!(
        s.admit(seq(1, 3, 1, None)).unwrap_err(),
        "sequence 1 is already scheduled"
    );
    assert_eq!(
        Scheduler::new(limits(0, 8, 8, 1)).unwrap_err(),
        "max batch must be between 1 and 1024, got 0"
    );
    assert_eq!(
        Scheduler::new(limits(4, 8, 9, 1)).unwrap_err(),
        "prefill chunk must be between 1 and 8, got 9"
    );
    assert_eq!(
        Scheduler::new(limits(4, 100_000, 8, 1)).unwrap_err(),
        "step tokens must be between 1 and 65536, got 100000"
    );
}
