//! olc-coordinator: registry, matcher, verifier, ledger and settlement. Filled in by the
//! network, jobs, and verification issues.
