//! dead-letter: quarantine index, inspection, replay and discard API
