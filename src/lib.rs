//! `sluice`: the command line that ties the services together.
//!
//! `sluice up` runs the whole pipeline in one process (with an embedded broker and schema
//! registry unless pointed at external ones); `sluice run <service>` runs one service;
//! `sluice broker`, `sluice registry`, `sluice topology`, `sluice send` and `sluice generate`
//! are the tools around it. The library half is what the end-to-end tests drive.

pub mod acls;
pub mod bench;
pub mod broker;
pub mod client;
pub mod devcert;
pub mod generate;
pub mod identity;
pub mod known;
pub mod load;
pub mod pathological;
pub mod population;
pub mod send;
pub mod topology;
pub mod up;
