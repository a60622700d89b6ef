// A first start on a fresh database and fresh topics is quiet: while topics are created, consumer
// groups form and the first writes flow through to the views, no service logs at error or fatal
// level and kafkajs prints nothing of its own; nor when they stop. Start-up noise an operator
// would read as a failure hides the failures that matter.
import { uniqueName } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shoppingWorkload, startPipeline, type Pipeline } from '../support/pipeline.js';
import { startedServices, type ServiceProcess } from '../support/services.js';

let pipeline: Pipeline;
let projector: ServiceProcess;

beforeAll(async () => {
  pipeline = await startPipeline('cleanstart');
  projector = pipeline.startProjector();
});

afterAll(() => pipeline.close());

/** Complete lines an operator would read as failures: error or fatal, or not our JSON at all. */
function alarming(output: string): string[] {
  // The last piece is empty or a line still being written.
  return output
    .split('\n')
    .slice(0, -1)
    .filter((line) => {
      try {
        const entry = JSON.parse(line) as { level?: unknown; service?: unknown };
        // kafkajs' own logger prints JSON too, with `"level":"ERROR"` and no service.
        return entry.level === 'error' || entry.level === 'fatal' || entry.service === undefined;
      } catch {
        return true;
      }
    });
}

describe('a first start', () => {
  it('projects the first writes with nothing logged at error level', async () => {
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the projector to consume',
    });
    await shoppingWorkload(pipeline, { carts: 4, rounds: 3, tag: uniqueName('clean') });
    await pipeline.expectCartSummariesConverge(60_000);

    const services = startedServices();
    expect(services.map((service) => service.name).sort()).toEqual([
      'projector',
      'relay',
      'shop-api',
    ]);
    for (const service of services) expect(service.output()).toContain('"level":"info"');
    const found = Object.fromEntries(
      services.map((service) => [service.name, alarming(service.output())]),
    );
    expect(found).toEqual({ 'shop-api': [], relay: [], projector: [] });
  });

  it('stops on SIGTERM with status 0, still with nothing logged at error level', async () => {
    const services = startedServices();
    const exits = services.map((service) => service.exited());
    for (const service of services) service.kill('SIGTERM');
    expect(await Promise.all(exits)).toEqual(services.map(() => 0));
    for (const service of services) expect(service.output()).toContain('"msg":"stopped"');
    const found = Object.fromEntries(
      services.map((service) => [service.name, alarming(service.output())]),
    );
    expect(found).toEqual({ 'shop-api': [], relay: [], projector: [] });
  });
});
