// Journey: one event's path — committed → published → applied per projection — with latencies.
import { useState } from 'preact/hooks';
import { api, query, type Journey, type JourneyEvent } from '../api.js';
import { duration, time } from '../format.js';
import { Badge, statusOf } from '../ui.js';

function TraceId({ event }: { event: JourneyEvent }) {
  if (event.traceUrl === null) return <>{event.traceId ?? '—'}</>;
  return (
    <a href={event.traceUrl} target="_blank" rel="noopener noreferrer" data-testid="journey-trace">
      {event.traceId}
    </a>
  );
}

function EventJourney({ event }: { event: JourneyEvent }) {
  return (
    <article class="card" data-testid="journey-event" data-event-id={event.eventId}>
      <h2>
        {event.type} — {event.aggregateType} {event.aggregateId} v{event.version}
      </h2>
      <p class="ids">
        event {event.eventId} · correlation {event.correlationId ?? '—'} · trace{' '}
        <TraceId event={event} />
      </p>
      <ol class="stages">
        <li data-testid="journey-committed" data-state="committed">
          <Badge status="ok">committed</Badge> {time(event.committed.at)} · LSN{' '}
          {event.committed.lsn ?? '—'}
        </li>
        {event.published === null ? (
          <li data-testid="journey-published" data-state="pending">
            <Badge status="warning">not published yet</Badge>
          </li>
        ) : (
          <li data-testid="journey-published" data-state="published">
            <Badge status="ok">published</Badge> {time(event.published.at)} · +
            {duration(event.published.latencyMs)} · {event.published.topic}/
            {event.published.partition}@{event.published.offset}
          </li>
        )}
        {event.projections.map((step) => (
          <li key={step.projection} data-testid="journey-projection" data-state={step.state}>
            <Badge status={statusOf(step.state)}>{step.state.replace('_', ' ')}</Badge>{' '}
            {step.projection} {step.at === undefined ? '' : time(step.at)}
            {step.latencyMs === undefined ? '' : ` · +${duration(step.latencyMs)}`}
            {step.reason === undefined ? '' : ` · ${step.reason}`}
          </li>
        ))}
      </ol>
    </article>
  );
}

export function JourneyPage() {
  const [text, setText] = useState('');
  const [journey, setJourney] = useState<Journey | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const search = async (event: Event): Promise<void> => {
    event.preventDefault();
    setError(undefined);
    try {
      setJourney(await api<Journey>(`/journey${query({ q: text.trim() })}`));
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };
  return (
    <>
      <form class="search" role="search" onSubmit={(event) => void search(event)}>
        <label>
          Aggregate id, event id, correlation id or trace id
          <input
            type="search"
            required
            data-testid="journey-query"
            value={text}
            onInput={(event) => setText(event.currentTarget.value)}
          />
        </label>
        <button type="submit" class="primary" data-testid="journey-search">
          Search
        </button>
      </form>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {journey?.events.length === 0 && <p data-testid="journey-empty">No event matches.</p>}
      {journey?.events.map((event) => (
        <EventJourney key={event.eventId} event={event} />
      ))}
    </>
  );
}
