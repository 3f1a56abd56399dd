/**
 * A worker's weights as they become available. A stack is deployed before its weights are published
 * (the README's order), so a worker may start with none or some of its tier's models: it syncs what
 * is published, says once per model what is missing and how to publish it, and checks again with
 * backoff (long-running workers) or when a task asks for a missing model (`kick`, rate-limited).
 * Missing weights never end the process: a crash loop would fail the ECS deployment and roll the
 * stack back. Other failures (a corrupt artifact, access denied) are real: thrown at start, logged
 * at error afterwards.
 */
import { messageOf } from '../base/errors.ts';
import { modelHash, type WeightsManifest } from '../model/weights.ts';
import type { Logger } from './log.ts';
import { modelMarker } from './marker.ts';
import { modelId, weightsFix } from './models.ts';

/** Where a worker's weights come from (S3: pipeline/aws/s3-weights.ts `syncModel`). */
export interface WeightsSource {
  /** Bring the model's weights into the local catalog: its manifest, or undefined while none are published. */
  sync(model: string): Promise<WeightsManifest | undefined>;
  /** Where they are published (for messages). */
  readonly location: string;
}

export interface WeightsWatch {
  /** Models synced so far. */
  ready(): string[];
  /** Models not published yet. */
  missing(): string[];
  /** Resolves true once at least one model is ready (after its `onReady`), false if stopped first. */
  anyReady(): Promise<boolean>;
  /** A task asked for a missing model: check again soon (at most once per `minGapMs`). */
  kick(): void;
  /** Check the missing models now, unless checked within `minGapMs` (a Lambda invocation's start). */
  check(): Promise<void>;
  stop(): Promise<void>;
}

export interface WatchOptions {
  source: WeightsSource;
  models: readonly string[];
  log: Logger;
  /** Runs as each model missing at start becomes ready (the GPU worker loads it); a failure is logged. */
  onReady?: (manifest: WeightsManifest) => Promise<void> | void;
  /** Check missing models in the background (a long-running worker); otherwise only when kicked (Lambda). */
  poll?: boolean;
  /** First wait between background checks; doubled each time up to `maxDelayMs`. */
  firstDelayMs?: number;
  maxDelayMs?: number;
  /** Kicks closer together than this are one check. */
  minGapMs?: number;
}

export const WEIGHTS_POLL = { firstDelayMs: 10_000, maxDelayMs: 60_000, minGapMs: 5_000 } as const;

/** Sync the published models now (errors other than "not published" are thrown), then watch for the rest. */
export async function watchWeights(options: WatchOptions): Promise<WeightsWatch> {
  const { source, log } = options;
  const { firstDelayMs, maxDelayMs, minGapMs } = { ...WEIGHTS_POLL, ...options };
  const ready: string[] = [];
  const missing: string[] = [];
  const markers: string[] = [];
  for (const model of options.models) {
    const manifest = await source.sync(model);
    if (manifest) {
      ready.push(model);
      markers.push(modelMarker(modelId(manifest), modelHash(manifest)));
    } else missing.push(model);
  }
  if (ready.length) log.log('info', 'weights ready', { models: markers });
  for (const model of missing)
    log.log('warn', 'waiting for weights: model not published', {
      model,
      weights: source.location,
      fix: weightsFix(source.location, model),
      ...(ready.length ? {} : { note: 'no model of this tier is published: not taking work until one is' }),
    });

  let stopped = false;
  let lastCheck = Date.now();
  let checking: Promise<void> | undefined;
  const failing = new Set<string>();
  let resolveAny: (v: boolean) => void;
  const any = new Promise<boolean>((r) => {
    resolveAny = r;
  });
  if (ready.length) resolveAny!(true);

  const checkMissing = (): Promise<void> => {
    checking ??= (async () => {
      lastCheck = Date.now();
      for (const model of [...missing]) {
        if (stopped) return;
        let manifest: WeightsManifest | undefined;
        try {
          manifest = await source.sync(model);
          failing.delete(model);
        } catch (err) {
          // Logged once until it changes: a poll every minute must not flood the log.
          if (!failing.has(model)) log.log('error', 'weights check failed; trying again', { model, error: messageOf(err) });
          failing.add(model);
          continue;
        }
        if (!manifest) continue;
        try {
          await options.onReady?.(manifest);
        } catch (err) {
          log.log('error', 'weights published but the model did not load', { model, error: messageOf(err) });
        }
        missing.splice(missing.indexOf(model), 1);
        ready.push(model);
        log.log('info', 'weights ready', { models: [modelMarker(modelId(manifest), modelHash(manifest))], waited: true });
        resolveAny(true);
      }
    })().finally(() => {
      checking = undefined;
    });
    return checking;
  };

  let wake: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  const loop = (async () => {
    if (!options.poll) return;
    let delay = firstDelayMs;
    while (missing.length && !stopped) {
      await new Promise<void>((r) => {
        wake = r;
        timer = setTimeout(r, delay);
      });
      clearTimeout(timer);
      if (stopped) break;
      await checkMissing();
      delay = Math.min(maxDelayMs, delay * 2);
    }
  })();

  return {
    ready: () => [...ready],
    missing: () => [...missing],
    anyReady: () => any,
    kick() {
      if (stopped || !missing.length || checking || Date.now() - lastCheck < minGapMs) return;
      if (options.poll && wake) wake();
      else void checkMissing();
    },
    async check() {
      if (stopped || !missing.length) return;
      if (checking) return checking;
      if (Date.now() - lastCheck >= minGapMs) await checkMissing();
    },
    async stop() {
      stopped = true;
      resolveAny(false);
      clearTimeout(timer);
      wake?.();
      await loop;
      await checking;
    },
  };
}
