//! route: content-based routing of matched events to destination topics
