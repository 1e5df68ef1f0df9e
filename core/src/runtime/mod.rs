//! The glommio driver.
