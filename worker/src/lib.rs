//! olc-worker: the daemon GPU owners run. Filled in by the network and jobs issues.
