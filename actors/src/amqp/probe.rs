use super::AmqpUrls;
use super::{Topology, connect_quietly, failed};
use crate::messaging::BrokerError;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

/// Messages ready in the inbound and the dead-letter queue, read over a short connection of its
/// own (a passive declare of a missing queue closes the channel, which must never be the
/// consumer's).
pub async fn queue_depths(url: &AmqpUrls, topology: &Topology) -> Result<(u32, u32), BrokerError> {
    let connection = connect_quietly(url, "queue probe").await?;
    let channel = connection.create_channel().await.map_err(failed("open a channel"))?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let mut depths = [0; 2];
    for (depth, queue) in depths.iter_mut().zip([&topology.inbound, &topology.dead_letter]) {
        let declared = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await;
        *depth = declared.map_err(failed("count a queue's messages"))?.message_count();
    }
    let _ = connection.close(200, "sampled".into()).await;
    Ok((depths[0], depths[1]))
}
