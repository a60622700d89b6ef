// The console's single page: login, then the pages under a header, routed by the URL's hash.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, SIGNED_OUT, type Me } from './api.js';
import { useLive } from './live.js';
import { AlertsPage } from './pages/alerts.js';
import { JourneyPage } from './pages/journey.js';
import { Login } from './pages/login.js';
import { OverviewPage } from './pages/overview.js';
import { ParkedPage } from './pages/parked.js';
import { ProjectionsPage } from './pages/projections.js';
import { RelayPage } from './pages/relay.js';
import './styles.css';

const PAGES = {
  overview: 'Overview',
  relay: 'Slot & relay',
  projections: 'Projections',
  parked: 'Dead letters & parked',
  journey: 'Journey',
  alerts: 'Alerts',
} as const;
type Page = keyof typeof PAGES;

function currentPage(): Page {
  const name = location.hash.replace(/^#\/?/, '');
  return name in PAGES ? (name as Page) : 'overview';
}

function Console({ me, onLogout }: { me: Me; onLogout: () => void }) {
  const [page, setPage] = useState<Page>(currentPage);
  const live = useLive();
  useEffect(() => {
    const onHash = (): void => setPage(currentPage());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  const logout = async (): Promise<void> => {
    await api('/session', 'DELETE').catch(() => undefined);
    onLogout();
  };
  const operator = me.role === 'operator';
  return (
    <>
      <header>
        <strong>Sluice console</strong>
        <nav>
          {(Object.keys(PAGES) as Page[]).map((name) => (
            <a
              key={name}
              href={`#/${name}`}
              data-testid={`nav-${name}`}
              aria-current={name === page ? 'page' : undefined}
            >
              {PAGES[name]}
            </a>
          ))}
        </nav>
        <span class={`live live-${live.mode}`} data-testid="live-mode">
          {live.mode}
        </span>
        <span data-testid="user">{me.subject}</span>
        <span class="badge" data-testid="role">
          {me.role}
        </span>
        <button type="button" data-testid="logout" onClick={() => void logout()}>
          Log out
        </button>
      </header>
      <main data-testid={`page-${page}`}>
        <h1>{PAGES[page]}</h1>
        {page === 'overview' && <OverviewPage overview={live.overview} />}
        {page === 'relay' && <RelayPage relay={live.relay} />}
        {page === 'projections' && (
          <ProjectionsPage projections={live.projections} operator={operator} />
        )}
        {page === 'parked' && <ParkedPage operator={operator} />}
        {page === 'journey' && <JourneyPage />}
        {page === 'alerts' && <AlertsPage />}
      </main>
    </>
  );
}

function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const [failure, setFailure] = useState<string | undefined>(undefined);
  useEffect(() => {
    const signedOut = (): void => setMe(null);
    addEventListener(SIGNED_OUT, signedOut);
    api<Me>('/me').then(setMe, (error: unknown) => {
      if (error instanceof ApiError && error.status === 401) setMe(null);
      else setFailure(error instanceof Error ? error.message : String(error));
    });
    return () => removeEventListener(SIGNED_OUT, signedOut);
  }, []);
  if (failure !== undefined) return <p class="error">The console did not answer: {failure}</p>;
  if (me === undefined) return <p class="loading">Loading…</p>;
  if (me === null) return <Login onLogin={setMe} />;
  return <Console me={me} onLogout={() => setMe(null)} />;
}

const root = document.getElementById('app');
if (root !== null) render(<App />, root);
