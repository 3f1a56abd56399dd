/** Progress bars for long work (downloads, backfills), drawn on stderr so stdout stays parseable. */
import cliProgress from 'cli-progress';
import type { Progress } from '../model/weights-fetch.ts';

export function byteProgress(label: string): Progress {
  let bar: cliProgress.SingleBar | undefined;
  const mb = (n: number) => (n / 1048576).toFixed(1);
  return {
    start(total) {
      bar = new cliProgress.SingleBar(
        {
          format: `${label} [{bar}] {percentage}% {got}/{all} MB {speed} MB/s eta {eta}s`,
          stream: process.stderr,
          hideCursor: true,
          noTTYOutput: false,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      );
      const started = Date.now();
      bar.start(total ?? 0, 0, { got: '0.0', all: total ? mb(total) : '?', speed: '0.0' });
      this.update = (bytes) => bar!.update(bytes, { got: mb(bytes), speed: mb(bytes / Math.max(0.001, (Date.now() - started) / 1000)) });
    },
    update() {},
    stop() {
      bar?.stop();
    },
  };
}

/** A bar over counted steps (images, epochs), with a free-text note (loss, accuracy). */
export function countProgress(): { start(label: string, total: number): void; update(done: number, info?: string): void; stop(): void } {
  let bar: cliProgress.SingleBar | undefined;
  return {
    start(label, total) {
      bar?.stop();
      bar = new cliProgress.SingleBar(
        { format: `${label} [{bar}] {value}/{total} {info} eta {eta}s`, stream: process.stderr, hideCursor: true, etaBuffer: 20 },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, { info: '' });
    },
    update(done, info) {
      bar?.update(done, { info: info ?? '' });
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
