// Another team's consumer of the billing events, in TypeScript with a Kafka client of its own:
// `readEvent` decodes each CloudEvents record and checks it against the billing catalog.
//
//   KAFKA_BROKERS=127.0.0.1:19092 node dist/consume.js outbox.event.invoice [max] [group]
//
// Prints one JSON line per event and stops after `max` (0: never). Delivery is at least once: it
// handles each version of an aggregate once (a real consumer keeps `handled` with its own data).
import { readEvent } from '@sluice/contracts';
import { isSluiceError } from '@sluice/errors';
import { Kafka, logLevel } from 'kafkajs';
import { billing } from './catalog.js';

const [topic = 'outbox.event.invoice', max = '0', groupId = 'billing-typescript'] =
  process.argv.slice(2);
const kafka = new Kafka({
  clientId: 'billing-consumer',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:19092').split(','),
  logLevel: logLevel.WARN,
});
const consumer = kafka.consumer({ groupId });
const handled = new Map<string, number>();
let seen = 0;
let enough: () => void = () => undefined;
const finished = new Promise<void>((resolve) => (enough = resolve));

function handle(message: Parameters<typeof readEvent>[1]): object | undefined {
  try {
    const event = readEvent(billing, message);
    if (event.aggregateVersion <= (handled.get(event.aggregateId) ?? 0)) return undefined;
    handled.set(event.aggregateId, event.aggregateVersion);
    // `event.type` narrows `event.payload` to that type's schema.
    const what =
      event.type === 'invoice.issued.v1' ? `issued to ${event.payload.customer}` : 'paid';
    return {
      aggregateId: event.aggregateId,
      version: event.aggregateVersion,
      type: event.type,
      what,
      amountCents: event.payload.amountCents,
    };
  } catch (error) {
    // Not an event of the catalog: a real consumer sets it aside (a dead-letter topic) and goes on.
    if (!isSluiceError(error)) throw error;
    return { refused: error.code, message: error.message };
  }
}

await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
await consumer.run({
  eachMessage: ({ message }) => {
    const line = handle(message);
    if (line !== undefined) console.log(JSON.stringify(line));
    seen += 1;
    if (Number(max) > 0 && seen >= Number(max)) enough();
    return Promise.resolve();
  },
});
await finished;
await consumer.disconnect();
