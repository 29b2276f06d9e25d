//! `order-process dlq`: list, replay and purge the dead-letter queue. Output goes to stdout;
//! logs to stderr.

use crate::cli::{DlqAction, DlqArgs};
use crate::settings::broker_kind;
use actors::amqp::{AmqpDeadLetters, Topology};
use actors::broker::BrokerKind;
use actors::messaging::{DeadLetter, DeadLetterQueue};
use anyhow::bail;
use std::io::Write;
use std::sync::Arc;

/// The dead-letter queue of the broker the arguments choose, and its name.
fn dead_letter_queue(args: &DlqArgs) -> anyhow::Result<(Box<dyn DeadLetterQueue>, String)> {
    match broker_kind(&args.broker, &args.servicebus)? {
        BrokerKind::Rabbitmq => {
            let delays = actors::consumer::RedeliveryPolicy::default().retry_delays;
            let topology = Arc::new(Topology::new(&args.queues, &args.amqp, &delays));
            let queue = topology.dead_letter.clone();
            Ok((Box::new(AmqpDeadLetters::new(args.amqp.amqp_url.clone(), topology)), queue))
        }
        #[cfg(feature = "servicebus")]
        BrokerKind::Servicebus => {
            let config = Arc::new(args.servicebus.clone());
            let dead_letters = actors::servicebus::ServiceBusDeadLetters::new(config, &args.queues.inbound_queue);
            let queue = dead_letters.path();
            Ok((Box::new(dead_letters), queue))
        }
        #[cfg(not(feature = "servicebus"))]
        BrokerKind::Servicebus => Err(actors::broker::BrokerChoiceError::ServiceBusNotBuilt.into()),
    }
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let (dead_letters, queue) = dead_letter_queue(&args)?;
    let mut out = std::io::stdout().lock();
    match args.action {
        DlqAction::List { limit, json } => {
            let (count, letters) = dead_letters.browse(limit).await?;
            if json {
                let listing = serde_json::json!({"queue": queue, "count": count, "messages": letters});
                writeln!(out, "{}", serde_json::to_string_pretty(&listing)?)?;
            } else {
                write_table(&mut out, &queue, count, &letters)?;
            }
        }
        DlqAction::Replay { correlation_ids, all } => {
            let select = |letter: &DeadLetter| {
                all || letter
                    .correlation_id
                    .as_ref()
                    .is_some_and(|id| correlation_ids.iter().any(|c| c.eq_ignore_ascii_case(id)))
            };
            let moved = dead_letters.replay(&select).await?;
            writeln!(out, "replayed {moved} message(s) from {queue}")?;
        }
        DlqAction::Purge { yes } => {
            if !yes {
                let (count, _) = dead_letters.browse(0).await?;
                bail!("{queue} holds {count} message(s); add --yes to delete them");
            }
            let purged = dead_letters.purge().await?;
            writeln!(out, "purged {purged} message(s) from {queue}")?;
        }
    }
    Ok(())
}

fn write_table(out: &mut impl Write, queue: &str, count: u32, letters: &[DeadLetter]) -> std::io::Result<()> {
    writeln!(out, "{count} message(s) in {queue}")?;
    if letters.is_empty() {
        return Ok(());
    }
    writeln!(out, "{:<36}  {:<20}  {:>8}  {:<25}  ERROR", "CORRELATION ID", "REASON", "ATTEMPTS", "LAST FAILURE")?;
    for letter in letters {
        writeln!(
            out,
            "{:<36}  {:<20}  {:>8}  {:<25}  {}",
            letter.correlation_id.as_deref().unwrap_or("-"),
            letter.reason,
            letter.attempts,
            letter.last_failure.as_deref().unwrap_or("-"),
            letter.error.as_deref().unwrap_or("-").chars().take(100).collect::<String>(),
        )?;
    }
    if (letters.len() as u32) < count {
        writeln!(out, "... {} more (use --limit)", count - letters.len() as u32)?;
    }
    Ok(())
}
