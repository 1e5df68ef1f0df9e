//! presence-mgmt: the management plane.
