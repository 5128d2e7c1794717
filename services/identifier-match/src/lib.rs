//! identifier-match: patient identity resolution to enterprise ids
