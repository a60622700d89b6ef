// Login: name and password → POST /api/session; a 401 says so plainly.
import { useState } from 'preact/hooks';
import { api, ApiError, type Me } from '../api.js';

export function Login({ onLogin }: { onLogin: (me: Me) => void }) {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    setError(undefined);
    try {
      onLogin(await api<Me>('/session', 'POST', { name, password }));
    } catch (failure) {
      setError(
        failure instanceof ApiError && failure.status === 401
          ? 'Wrong name or password.'
          : `Login failed: ${failure instanceof Error ? failure.message : String(failure)}`,
      );
    }
  };
  return (
    <main class="login">
      <form onSubmit={(event) => void submit(event)} data-testid="login-form">
        <h1>Sluice console</h1>
        <label>
          Name
          <input
            name="name"
            autocomplete="username"
            required
            data-testid="login-name"
            value={name}
            onInput={(event) => setName(event.currentTarget.value)}
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete="current-password"
            required
            data-testid="login-password"
            value={password}
            onInput={(event) => setPassword(event.currentTarget.value)}
          />
        </label>
        {error !== undefined && (
          <p class="error" role="alert" data-testid="login-error">
            {error}
          </p>
        )}
        <button type="submit" class="primary" data-testid="login-submit">
          Log in
        </button>
      </form>
    </main>
  );
}
