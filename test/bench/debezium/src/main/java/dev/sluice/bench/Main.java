package dev.sluice.bench;

import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;

/**
 * Drains a PostgreSQL outbox into Kafka: Debezium's embedded engine with the Outbox Event Router,
 * and a KafkaProducer of its own. Each batch is sent whole, and its offsets are committed only
 * once Kafka acknowledged every record of it.
 *
 * <p>Usage: {@code Main <settings.properties>}, where {@code engine.*} are the engine's and
 * connector's settings, {@code producer.*} the producer's, and {@code topic.partitions} the
 * partitions of the topics it creates (unlimited retention, like the relay's).
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 1) throw new IllegalArgumentException("usage: Main <settings.properties>");
    Properties settings = new Properties();
    try (InputStream in = new FileInputStream(args[0])) {
      settings.load(in);
    }
    Properties producerSettings = withPrefix(settings, "producer.");
    int partitions = Integer.parseInt(settings.getProperty("topic.partitions", "6"));
    KafkaProducer<byte[], byte[]> producer =
        new KafkaProducer<>(producerSettings, new ByteArraySerializer(), new ByteArraySerializer());
    Admin admin = Admin.create(producerSettings);
    CountDownLatch finished = new CountDownLatch(1);
    boolean[] failed = {false};
    DebeziumEngine<RecordChangeEvent<SourceRecord>> engine =
        DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
            .using(withPrefix(settings, "engine."))
            .notifying(new Sender(producer, admin, partitions))
            .using(
                (success, message, error) -> {
                  if (!success) {
                    failed[0] = true;
                    System.err.println("engine stopped: " + message);
                    if (error != null) error.printStackTrace();
                  }
                  finished.countDown();
                })
            .build();
    ExecutorService executor = Executors.newSingleThreadExecutor();
    Runtime.getRuntime()
        .addShutdownHook(new Thread(() -> stop(engine, finished, producer, admin)));
    executor.execute(engine);
    finished.await();
    if (failed[0]) System.exit(1);
  }

  private static void stop(
      DebeziumEngine<?> engine, CountDownLatch finished, KafkaProducer<?, ?> producer, Admin admin) {
    try {
      engine.close();
      finished.await(30, TimeUnit.SECONDS);
    } catch (IOException | InterruptedException error) {
      System.err.println("stopping the engine: " + error);
    }
    producer.close();
    admin.close();
  }

  private static Properties withPrefix(Properties settings, String prefix) {
    Properties selected = new Properties();
    for (String name : settings.stringPropertyNames()) {
      if (name.startsWith(prefix))
        selected.setProperty(name.substring(prefix.length()), settings.getProperty(name));
    }
    return selected;
  }

  /** Sends each batch, waits for every acknowledgement, then marks the batch processed. */
  private static final class Sender
      implements DebeziumEngine.ChangeConsumer<RecordChangeEvent<SourceRecord>> {
    private final KafkaProducer<byte[], byte[]> producer;
    private final Admin admin;
    private final int partitions;
    private final Set<String> topics = new HashSet<>();

    Sender(KafkaProducer<byte[], byte[]> producer, Admin admin, int partitions) {
      this.producer = producer;
      this.admin = admin;
      this.partitions = partitions;
    }

    @Override
    public void handleBatch(
        List<RecordChangeEvent<SourceRecord>> events,
        DebeziumEngine.RecordCommitter<RecordChangeEvent<SourceRecord>> committer)
        throws InterruptedException {
      List<Future<RecordMetadata>> sends = new ArrayList<>(events.size());
      for (RecordChangeEvent<SourceRecord> event : events) {
        SourceRecord record = event.record();
        ensureTopic(record.topic());
        sends.add(producer.send(toProducerRecord(record)));
      }
      producer.flush();
      for (Future<RecordMetadata> send : sends) {
        try {
          send.get();
        } catch (ExecutionException error) {
          throw new IllegalStateException("Kafka refused a record", error.getCause());
        }
      }
      for (RecordChangeEvent<SourceRecord> event : events) committer.markProcessed(event);
      committer.markBatchFinished();
    }

    private void ensureTopic(String topic) throws InterruptedException {
      if (!topics.add(topic)) return;
      NewTopic created =
          new NewTopic(topic, Optional.of(partitions), Optional.empty())
              .configs(Map.of("retention.ms", "-1", "retention.bytes", "-1"));
      try {
        admin.createTopics(List.of(created)).all().get();
      } catch (ExecutionException error) {
        if (!(error.getCause() instanceof TopicExistsException))
          throw new IllegalStateException("creating topic " + topic, error.getCause());
      }
    }

    private static ProducerRecord<byte[], byte[]> toProducerRecord(SourceRecord record) {
      RecordHeaders headers = new RecordHeaders();
      for (Header header : record.headers())
        headers.add(header.key(), bytes(header.value()));
      return new ProducerRecord<>(
          record.topic(),
          null,
          record.timestamp(),
          bytes(record.key()),
          bytes(record.value()),
          headers);
    }

    private static byte[] bytes(Object value) {
      return value == null ? null : String.valueOf(value).getBytes(StandardCharsets.UTF_8);
    }
  }
}
