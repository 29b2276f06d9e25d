//! order-process: composition root.
