//! The load scenarios, one per subcommand: OPTIONS pings, PUBLISH with a mix
//! of initial/refresh/modify, SUBSCRIBE dialogs, and PUBLISH→NOTIFY fan-out.

pub mod fanout;
pub mod options;
pub mod publish;
pub mod subscribe;
