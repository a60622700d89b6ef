// Live data: one EventSource on /api/stream; while it is down, the same bodies by polling.
import { useEffect, useState } from 'preact/hooks';
import { api, type Overview, type Projections, type RelayView } from './api.js';

export interface LiveData {
  overview?: Overview;
  relay?: RelayView;
  projections?: Projections;
  /** `live` while the stream delivers, `polling` while it is down. */
  mode: 'live' | 'polling';
}

const POLL_MS = 2000;
const RECONNECT_MS = 5000;
const TOPICS = ['overview', 'relay', 'projections'] as const;
type Topic = (typeof TOPICS)[number];

/** Subscribes to the console's stream for as long as the calling component is mounted. */
export function useLive(): LiveData {
  const [data, setData] = useState<LiveData>({ mode: 'live' });
  useEffect(() => {
    const set = (topic: Topic, body: unknown): void =>
      setData((previous) => ({ ...previous, [topic]: body }));
    let source: EventSource | undefined;
    let poller: ReturnType<typeof setInterval> | undefined;
    let reconnect: ReturnType<typeof setTimeout> | undefined;
    const poll = (): void => {
      for (const topic of TOPICS) {
        api(`/${topic}`).then(
          (body) => set(topic, body),
          () => undefined,
        );
      }
    };
    const startPolling = (): void => {
      setData((previous) => ({ ...previous, mode: 'polling' }));
      if (poller !== undefined) return;
      poll();
      poller = setInterval(poll, POLL_MS);
    };
    const open = (): void => {
      source = new EventSource('/api/stream');
      for (const topic of TOPICS) {
        source.addEventListener(topic, (event) => set(topic, JSON.parse(event.data as string)));
      }
      source.onopen = () => {
        clearInterval(poller);
        poller = undefined;
        setData((previous) => ({ ...previous, mode: 'live' }));
      };
      source.onerror = () => {
        startPolling();
        if (source?.readyState !== EventSource.CLOSED) return;
        reconnect = setTimeout(open, RECONNECT_MS);
      };
    };
    open();
    return () => {
      source?.close();
      clearInterval(poller);
      clearTimeout(reconnect);
    };
  }, []);
  return data;
}
