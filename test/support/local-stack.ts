/** Starts the embedded stack for a test file, with a counting engine and optional store faults. */
import { join } from 'node:path';
import { HeadObjectCommand, PutObjectCommand, type PutObjectCommandInput } from '@aws-sdk/client-s3';
import { ortEngine } from '../../inference/ort-engine.ts';
import type { Engine, LoadedModel } from '../../inference/engine.ts';
import { startEmbeddedStack, type EmbeddedStack, type EmbeddedStackOptions } from '../../local/stack.ts';
import { silentLogger } from '../../pipeline/log.ts';
import type { EmbeddedCredentials } from '../../pipeline/aws/local-credentials.ts';
import { EMBEDDED_STACK, type StackHandle, writeStackFile } from '../../pipeline/aws/stack-handle.ts';
import { INDEX_TABLE } from '../../pipeline/aws/wiring.ts';
import { parseTiers, type TiersFile } from '../../tiers/schema.ts';
import { randomArtifact, tempDir } from './fixtures.ts';

export interface EngineProbe {
  /** Images classified so far. */
  images: number;
  calls: number;
  /** Runs before each classify call (tests slow the engine down or observe it). */
  beforeClassify?: () => Promise<void> | void;
}

export function countingEngine(base: Engine, probe: EngineProbe): Engine {
  return {
    name: base.name,
    async load(dir, options) {
      const model = await base.load(dir, options);
      const counted: LoadedModel = {
        description: model.description,
        variant: model.variant,
        resolution: model.resolution,
        manifest: model.manifest,
        async classify(images) {
          await probe.beforeClassify?.();
          probe.calls++;
          probe.images += images.length;
          return model.classify(images);
        },
        // The same count for the inference that also returns the pooled features (the worker's, when embeddings are kept).
        ...(model.classifyWithFeatures
          ? {
              async classifyWithFeatures(images: Parameters<NonNullable<LoadedModel['classifyWithFeatures']>>[0]) {
                await probe.beforeClassify?.();
                probe.calls++;
                probe.images += images.length;
                return model.classifyWithFeatures!(images);
              },
            }
          : {}),
        dispose: () => model.dispose(),
      };
      return counted;
    },
  };
}

export async function startTestStack(
  tiers: unknown,
  options: Partial<EmbeddedStackOptions> = {},
): Promise<{ stack: EmbeddedStack; probe: EngineProbe; config: TiersFile }> {
  const weights = await tempDir('effitag-weights-');
  await randomArtifact(join(weights, 'b0'), 'b0');
  const probe: EngineProbe = { images: 0, calls: 0 };
  const config = parseTiers(tiers);
  const dataDir = options.dataDir ?? join(await tempDir('effitag-data-'), 's3');
  const stack = await startEmbeddedStack({
    dataDir,
    tiers: config,
    weightsDir: weights,
    engine: countingEngine(ortEngine({ log: () => {} }), probe),
    log: silentLogger,
    maxReceiveCount: 3,
    visibilitySeconds: 30,
    worker: { retryBaseSeconds: 0.4, waitSeconds: 1 },
    ...options,
  });
  // The `effitag` commands a test runs find this stack's credentials as they find `npm start`'s:
  // in its data directory, through EFFITAG_DATA_DIR (child processes inherit it).
  process.env.EFFITAG_DATA_DIR = dataDir;
  return { stack, probe, config };
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function put(
  stack: EmbeddedStack,
  key: string,
  body: Uint8Array | string,
  extra: Partial<PutObjectCommandInput> = {},
): Promise<string> {
  const out = await stack.s3.send(new PutObjectCommand({ Bucket: stack.bucket, Key: key, Body: body, ...extra }));
  return (out.ETag ?? '').replace(/"/g, '');
}

export async function head(stack: EmbeddedStack, key: string) {
  return stack.s3.send(new HeadObjectCommand({ Bucket: stack.bucket, Key: key }));
}

/** Wait until the object carries an EffiTag status for the given ETag; returns its head. */
export function waitForStatus(stack: EmbeddedStack, key: string, eTag: string, timeoutMs?: number) {
  return waitFor(
    `status on ${key}`,
    async () => {
      const h = await head(stack, key);
      return h.Metadata?.['effitag-etag'] === eTag && h.Metadata?.['effitag-status'] ? h : undefined;
    },
    timeoutMs,
  );
}

/** `effitag local`'s port flags; without a gallery port, no gallery (it would take the default 4570). */
export function portFlags(ports: { s3: number; sqs: number; dynamodb?: number; s3vectors?: number; gallery?: number }): string[] {
  return [
    '--s3vectors-port',
    String(ports.s3vectors ?? 0),
    '--s3-port',
    String(ports.s3),
    '--sqs-port',
    String(ports.sqs),
    '--dynamodb-port',
    String(ports.dynamodb ?? 0),
    ...(ports.gallery === undefined ? ['--no-gallery'] : ['--gallery-port', String(ports.gallery)]),
  ];
}

/**
 * A handle file for stand-ins a test started by hand (no `startEmbeddedStack`): `effitag` commands run
 * with EFFITAG_DATA_DIR=dataDir then find them as they find `npm start`'s stack.
 */
export function standInHandle(
  dataDir: string,
  o: Partial<Pick<StackHandle, 'intake' | 'tierQueues' | 'buckets' | 'weightsLocation'>> & {
    credentials: EmbeddedCredentials;
    s3?: string;
    sqs?: string;
    dynamodb?: string;
  },
): StackHandle {
  const handle: StackHandle = {
    name: EMBEDDED_STACK,
    kind: 'embedded',
    region: 'us-east-1',
    buckets: o.buckets ?? [],
    weightsLocation: o.weightsLocation ?? join(dataDir, 'no-weights'),
    ...(o.intake ? { intake: o.intake } : {}),
    tierQueues: o.tierQueues ?? {},
    indexTable: INDEX_TABLE,
    endpoints: {
      ...(o.s3 ? { s3: o.s3 } : {}),
      ...(o.sqs ? { sqs: o.sqs } : {}),
      ...(o.dynamodb ? { dynamodb: o.dynamodb } : {}),
    },
    credentials: o.credentials,
  };
  writeStackFile(dataDir, handle);
  return handle;
}
