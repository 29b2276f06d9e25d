//! What an operator sees: `/metrics` counts, trace context carried across the queue, and spans
//! exported over OTLP to a collector (here, a receiver inside the test).

use lab::kit::*;
use lapin::types::FieldTable;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `name{labels}` → value, for every sample line of a Prometheus text exposition.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(base: &str) -> HashMap<String, f64> {
    samples(&reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap())
}

#[actix_rt::test]
async fn metrics_count_exactly_what_was_processed_per_actor_and_outcome() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let base = format!("http://{}", app.http_addr());
    let ids: Vec<String> = (0..3).map(|_| new_correlation_id()).collect();
    for cid in &ids {
        env.publish(order(cid).to_string().as_bytes(), Some(cid)).await;
    }
    env.publish(order(&ids[0]).to_string().as_bytes(), Some(&ids[0])).await; // a duplicate
    env.publish(b"{\"correlationId\": \"nope\"}", None).await; // invalid

    let settled = |m: &HashMap<String, f64>, outcome: &str| {
        m.get(&format!("order_process_messages_total{{outcome=\"{outcome}\"}}")).copied()
    };
    let m = eventually("five settled deliveries", || async {
        let m = scrape(&base).await;
        let total: f64 =
            ["processed", "duplicate", "dead_lettered", "retried"].iter().filter_map(|o| settled(&m, o)).sum();
        (total >= 5.0).then_some(m)
    })
    .await;

    let value = |key: &str| m.get(key).copied().unwrap_or_else(|| panic!("{key} missing from /metrics"));
    assert_eq!(value(r#"order_process_messages_total{outcome="processed"}"#), 3.0);
    assert_eq!(value(r#"order_process_messages_total{outcome="duplicate"}"#), 1.0);
    assert_eq!(value(r#"order_process_messages_total{outcome="dead_lettered"}"#), 1.0);
    assert_eq!(settled(&m, "retried"), Some(0.0), "nothing was retried (the series exists from the start)");
    assert_eq!(value(r#"order_process_dead_letters_total{reason="invalid"}"#), 1.0);
    assert_eq!(value(r#"order_process_actor_messages_total{actor="consumer"}"#), 5.0);
    assert_eq!(value(r#"order_process_actor_messages_total{actor="processor"}"#), 4.0);
    assert_eq!(value(r#"order_process_actor_messages_total{actor="publisher"}"#), 4.0);
    // PROCESSING and COMPLETED for each of the four valid deliveries, FAILED for the invalid one
    // only if it had a usable id (it had not).
    assert_eq!(value(r#"order_process_actor_messages_total{actor="status_writer"}"#), 8.0);
    assert_eq!(value("order_process_processing_duration_seconds_count"), 4.0);
    assert!(
        value(r#"order_process_actor_handling_duration_seconds_count{actor="processor"}"#) >= 1.0,
        "one transaction per batch"
    );
    assert_eq!(value(r#"order_process_actor_in_flight{actor="consumer"}"#), 0.0);
    assert_eq!(value("order_process_consumer_attached"), 1.0);
    assert_eq!(value("order_process_prefetch_limit"), 512.0);
    assert!(m.keys().all(|k| !k.starts_with("order_process_actor_failures_total")), "no failures");
    for actor in ["consumer", "processor", "status_writer", "publisher"] {
        assert_eq!(value(&format!("order_process_actor_restarts_total{{actor=\"{actor}\"}}")), 0.0, "no restarts");
    }

    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent_header() -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), text_header(&format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")));
    headers
}

#[actix_rt::test]
async fn the_trace_context_travels_from_the_inbound_to_the_outbound_message() {
    let _telemetry = order_process::telemetry::init(order_process::telemetry::LogFormat::Json, "info").unwrap();
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();

    env.publish_with(order(&cid).to_string().as_bytes(), Some(&cid), traceparent_header()).await;
    let event = env.next_message(&env.outbound()).await;

    let traceparent = header_text(&event, "traceparent").expect("the event carries a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE_ID, "same trace");
    assert_ne!(parts[2], PARENT_SPAN_ID, "a span of this service as parent");
    assert_eq!(parts[3], "01", "still sampled");

    // Without a trace context and with no traces exported, no trace is started, so none is
    // passed on: downstream would take an unsampled one for a decision.
    let untraced = new_correlation_id();
    env.publish(order(&untraced).to_string().as_bytes(), Some(&untraced)).await;
    let event = env.next_message(&env.outbound()).await;
    assert_eq!(event.properties.correlation_id().as_ref().map(|c| c.as_str()), Some(untraced.as_str()));
    assert_eq!(header_text(&event, "traceparent"), None);
    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[actix_rt::test]
async fn the_spans_of_one_message_reach_an_otlp_collector_with_their_links() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream_of(listener));
    actix_rt::spawn(server);
    // SAFETY: set before any other thread of this test process reads the environment.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
        std::env::set_var("OTEL_SERVICE_NAME", "order-process-test");
    }
    let telemetry = order_process::telemetry::init(order_process::telemetry::LogFormat::Json, "info").unwrap();
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();

    env.publish_with(order(&cid).to_string().as_bytes(), Some(&cid), traceparent_header()).await;
    env.next_message(&env.outbound()).await;
    // A message without a trace context starts a trace of its own when traces are exported (the
    // default sampler records roots).
    let root = new_correlation_id();
    env.publish(order(&root).to_string().as_bytes(), Some(&root)).await;
    let event = env.next_message(&env.outbound()).await;
    let root_traceparent = header_text(&event, "traceparent").expect("a started trace is passed on");
    app.run_until_stopped(async {}).await.unwrap();
    telemetry.shutdown().await;

    let spans = collector.0.lock().unwrap().clone();
    let consumer_of = |cid: &str| {
        spans
            .iter()
            .find(|s| {
                s.kind == SpanKind::Consumer as i32
                    && attribute(s, "messaging.message.conversation_id").as_deref() == Some(cid)
            })
            .unwrap_or_else(|| {
                panic!("no consumer span of {cid} among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>())
            })
    };
    let started = consumer_of(&root);
    assert!(started.parent_span_id.is_empty(), "a root span");
    assert_eq!(root_traceparent.split('-').nth(1), Some(hex(&started.trace_id).as_str()));
    let consumer = consumer_of(&cid);
    assert_eq!(consumer.name, format!("process {}", env.inbound()));
    assert_eq!(hex(&consumer.trace_id), TRACE_ID);
    assert_eq!(hex(&consumer.parent_span_id), PARENT_SPAN_ID, "child of the publisher's span");
    assert_eq!(attribute(consumer, "messaging.system").as_deref(), Some("rabbitmq"));
    assert_eq!(attribute(consumer, "messaging.destination.name"), Some(env.inbound()));
    assert_eq!(attribute(consumer, "messaging.operation").as_deref(), Some("process"));
    assert_eq!(attribute(consumer, "messaging.message.conversation_id"), Some(cid.clone()));
    assert!(attribute(consumer, "messaging.message.id").is_some());

    let children: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == consumer.span_id).collect();
    let mut names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    let publish = format!("publish {}", env.outbound());
    let mut expected = vec!["order transaction", publish.as_str(), "status COMPLETED", "status PROCESSING"];
    expected.sort();
    assert_eq!(names, expected);
    assert!(children.iter().all(|s| s.trace_id == consumer.trace_id));
    let producer = children.iter().find(|s| s.name == publish).unwrap();
    assert_eq!(producer.kind, SpanKind::Producer as i32);
    assert_eq!(attribute(producer, "messaging.destination.name"), Some(env.outbound()));
    env.cleanup().await;
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
