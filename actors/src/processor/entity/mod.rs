//! SeaORM entities of the tables created by the `migration` crate.

pub mod order_items;
pub mod orders;
