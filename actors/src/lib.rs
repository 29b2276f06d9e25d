//! The actors of order-process and everything they stand on.
//!
//! ```text
//!                 ┌──────────────────────────── Supervisor (restarts any actor that stops) ───────────────────────────┐
//!  inbound queue  │  Consumer ──SetStatuses(PROCESSING)──▶ StatusWriter ──▶ Redis        (status_writer/)          │
//!  ─────────────▶ │  (consumer/)──PersistOrders─────────▶ Processor ────▶ PostgreSQL    (processor/, group commit)│
//!  ◀── ack ────── │  batches of │──SetStatuses(COMPLETED)─▶ StatusWriter                                          │
//!                 │  deliveries │──PublishEvents─────────▶ Publisher ────▶ outbound queue (publisher/)            │
//!                 │             └─ settles each delivery: ack | retry later | dead-letter, after the replies above│
//!                 └───────────────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Where things live:
//! - One folder per actor, with its messages, config, port and adapter: [`consumer`] (which
//!   tells the whole life of a delivery: gather, decode, status, persist, publish, settle),
//!   [`status_writer`], [`processor`], [`publisher`]. [`supervisor`] starts and wires them.
//! - Business rules as plain functions: [`order::decode`] (validation), [`status::may_replace`]
//!   (status never goes backwards), [`consumer::decide`] (ack, retry or dead-letter);
//!   idempotency is the unique CorrelationId in [`processor`].
//! - Broker-neutral messaging ports in [`messaging`]; RabbitMQ adapter in [`amqp`], Azure Service
//!   Bus adapter in `servicebus` (feature `servicebus`, default); in-process
//!   adapters of every port in [`memory`] (unit tests and the embedded demo).
//! - [`config`]: how each setting is declared once, beside its component.
//! - [`events`]: what happens, logged and counted together; [`metrics`]: the instruments.
//! - [`retry`]: per-call timeout, bounded retries with backoff, reconnect loops; [`error`]:
//!   error causes kept whole.
//! - [`trace_context`]: W3C trace context in message headers, and each delivery's tracing.

pub mod amqp;
pub mod broker;
pub mod config;
pub mod consumer;
pub mod dependency;
pub mod error;
pub mod events;
pub mod health;
pub mod memory;
pub mod messaging;
pub mod metrics;
pub mod order;
pub mod processor;
pub mod publisher;
pub mod retry;
pub mod secret;
pub mod servicebus;
pub mod status;
pub mod status_writer;
pub mod supervisor;
pub mod trace_context;

pub use health::Health;
pub use metrics::Metrics;
pub use supervisor::{Ports, Worker, WorkerConfig};
