//! The integration tests, in one binary: the real `order-process` (in this process, or as a child
//! process) against the real RabbitMQ, PostgreSQL and Redis, each test in its own sandbox
//! (`lab::kit`). The chaos suite, which stops those services, is `tests/chaos.rs`.

mod asyncapi;
mod batches;
mod broker_contract;
mod broker_urls;
mod chart_values;
mod cli;
mod conflicts;
mod dlq;
mod failures;
mod inspect;
mod observability;
mod pipeline;
mod scale;
mod servicebus_chaos;
mod servicebus_e2e;
mod servicebus_live;
mod servicebus_tools;
mod settings_docs;
mod settle;
