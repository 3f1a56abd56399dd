/**
 * Graceful shutdown for long-running workers (the ECS task; `effitag local`): on SIGTERM or SIGINT
 * stop polling, finish the batch in hand, make prefetched messages visible again, then resolve.
 * ECS sends SIGTERM and waits `stopTimeout` (set in the stack to cover a batch) before SIGKILL.
 */
import type { Worker } from './worker.ts';

export function stopOnSignals(workers: readonly Pick<Worker, 'stop'>[], onStopped?: () => void): () => void {
  const handler = () => {
    void Promise.all(workers.map((w) => w.stop())).then(() => onStopped?.());
  };
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
  return () => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
  };
}
