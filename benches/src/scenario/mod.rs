//! The load scenarios, one per subcommand: OPTIONS pings, PUBLISH with a mix
//! of initial/refresh/modify, SUBSCRIBE dialogs, PUBLISH→NOTIFY fan-out,
//! REGISTER life cycles and the carrier population model.

pub mod fanout;
pub mod model;
pub mod options;
pub mod population;
pub mod publish;
pub mod register;
pub mod subscribe;
