/**
 * Batches applied behind the consumer's back, so that Kafka fetches the next ones while these
 * commit. One chain per partition keeps its batches in order; up to `concurrency` batches
 * apply side by side. A batch may hold several partitions' records: it waits for each one's
 * earlier batches.
 */
export interface ApplyQueue {
  /**
   * Queues `work` behind the earlier batches of its partitions, first waiting while taking `load`
   * would put more than a limit in hand, unless nothing is (calling `waiting` every second
   * meanwhile: the consumer's heartbeat). Pushes are taken in the order they came: a small one
   * does not pass a large one that waits. `work` must not throw. Does nothing once the queue is
   * closed.
   */
  push(
    partitions: readonly string[],
    load: Load,
    work: () => Promise<void>,
    waiting: () => Promise<void>,
  ): Promise<void>;
  /** Resolves when everything queued for `partition` so far has run. */
  applied(partition: string): Promise<void>;
  /** Takes nothing more, and resolves when everything queued has run. */
  close(): Promise<void>;
}

/** Records of a batch, and about how many bytes they hold. */
export interface Load {
  records: number;
  bytes: number;
}

/** At most `concurrency` holders at once; the others wait, in order. */
function createSlots(concurrency: number) {
  const waiting: (() => void)[] = [];
  let active = 0;
  return {
    take(): Promise<void> {
      if (active < concurrency) {
        active += 1;
        return Promise.resolve();
      }
      return new Promise((resolve) => waiting.push(resolve));
    },
    release(): void {
      const next = waiting.shift();
      if (next === undefined) active -= 1;
      else next();
    },
  };
}

export function createApplyQueue(options: { limits: Load; concurrency: number }): ApplyQueue {
  const tails = new Map<string, Promise<void>>();
  const running = new Set<Promise<void>>();
  const slots = createSlots(options.concurrency);
  const inHand: Load = { records: 0, bytes: 0 };
  let closed = false;
  const full = (load: Load) =>
    inHand.records > 0 &&
    (inHand.records + load.records > options.limits.records ||
      inHand.bytes + load.bytes > options.limits.bytes);

  /** Takes `work` once its load fits. */
  const take = async (
    partitions: readonly string[],
    load: Load,
    work: () => Promise<void>,
    waiting: () => Promise<void>,
  ): Promise<void> => {
    while (full(load)) {
      let timer: NodeJS.Timeout | undefined;
      const second = new Promise((resolve) => (timer = setTimeout(resolve, 1000)));
      await Promise.race([...running, second]);
      clearTimeout(timer);
      await waiting();
    }
    if (closed) return;
    inHand.records += load.records;
    inHand.bytes += load.bytes;
    const job: Promise<void> = Promise.all(
      partitions.map((partition) => tails.get(partition) ?? Promise.resolve()),
    )
      .then(() => slots.take())
      .then(work)
      .finally(() => {
        slots.release();
        inHand.records -= load.records;
        inHand.bytes -= load.bytes;
        running.delete(job);
        for (const partition of partitions)
          if (tails.get(partition) === job) tails.delete(partition);
      });
    for (const partition of partitions) tails.set(partition, job);
    running.add(job);
  };
  let taking: Promise<void> = Promise.resolve();

  return {
    push(partitions, load, work, waiting) {
      const turn = taking.then(() => take(partitions, load, work, waiting));
      taking = turn.catch(() => undefined);
      return turn;
    },
    async applied(partition) {
      await tails.get(partition);
    },
    async close() {
      closed = true;
      while (running.size > 0) await Promise.all(running);
    },
  };
}
