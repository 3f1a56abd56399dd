/**
 * Structured JSON logs (one object per line) and counters. Counter flushes are written in CloudWatch
 * Embedded Metric Format, so on Lambda and ECS (awslogs) they become metrics with no API calls:
 * namespace EffiTag, dimensions Tier and Outcome/Reason.
 */
import { ENV } from '../base/runtime-names.ts';
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function jsonLogger(options: { level?: Level; write?: (line: string) => void; base?: Record<string, unknown> } = {}): Logger {
  const min = ORDER[options.level ?? ((process.env[ENV.logLevel] as Level) || 'info')] ?? 20;
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const base = options.base ?? {};
  return {
    log(level, msg, fields) {
      if (ORDER[level] < min) return;
      write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...base, ...fields }));
    },
    child(fields) {
      return jsonLogger({ ...options, base: { ...base, ...fields } });
    },
  };
}

export const silentLogger: Logger = {
  log() {},
  child() {
    return silentLogger;
  },
};

/** Outcome counters: tagged, skipped by reason, failed by reason, retried. */
export class Counters {
  readonly values = new Map<string, number>();
  inc(name: string, by = 1): void {
    this.values.set(name, (this.values.get(name) ?? 0) + by);
  }
  get(name: string): number {
    return this.values.get(name) ?? 0;
  }
  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.values].sort());
  }
  private emitted = new Map<string, number>();
  /** CloudWatch EMF record of what changed since the last call (the counters themselves keep counting). */
  emfDelta(dimensions: Record<string, string>): string | undefined {
    const delta: Record<string, number> = {};
    for (const [name, value] of this.values) {
      const d = value - (this.emitted.get(name) ?? 0);
      if (d !== 0) delta[name] = d;
      this.emitted.set(name, value);
    }
    const metrics = Object.keys(delta);
    if (metrics.length === 0) return undefined;
    return JSON.stringify({
      _aws: {
        Timestamp: Date.now(),
        CloudWatchMetrics: [
          { Namespace: 'EffiTag', Dimensions: [Object.keys(dimensions)], Metrics: metrics.map((Name) => ({ Name, Unit: 'Count' })) },
        ],
      },
      ...dimensions,
      ...delta,
    });
  }
}
