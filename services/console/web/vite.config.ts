import { defineConfig } from 'vite';

// Preact through Vite's own JSX transform (automatic runtime); every asset is bundled into dist/.
// `pnpm dev` serves the pages with reloading and sends /api to a running console (CONSOLE_URL).
export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 300 },
  server: { proxy: { '/api': process.env.CONSOLE_URL ?? 'http://127.0.0.1:9470' } },
});
