/**
 * The names of the runtime contract: the environment variables the CDK stack gives every deployed
 * runtime (router and backfill Lambdas, CPU worker Lambdas, GPU containers), encoded and decoded by
 * pipeline/runtime-config.ts. On the ground floor so that every layer that reads one (the log level,
 * the tfjs backend, onnxruntime's thread script, the cache directory) reads it under this one name.
 */

export const ENV = {
  /** The validated tiers file (JSON), baked in at synth time. */
  tiers: 'EFFITAG_TIERS',
  /** Tier name → task queue URL (JSON). */
  queueUrls: 'EFFITAG_QUEUE_URLS',
  /** s3://bucket/prefix of the published weights. */
  weights: 'EFFITAG_WEIGHTS',
  /** The tag index's DynamoDB table (pipeline/tag-index.ts); absent: no index. */
  indexTable: 'EFFITAG_INDEX_TABLE',
  /** The S3 Vectors bucket of the image embeddings (issue 23; pipeline/aws/s3-vectors.ts). */
  vectorBucket: 'EFFITAG_VECTOR_BUCKET',
  logLevel: 'EFFITAG_LOG_LEVEL',
  /** The tier a worker serves (workers only). */
  tier: 'EFFITAG_TIER',
  /** Local catalog directory the worker syncs weights into (default /tmp/effitag-weights). */
  weightsDir: 'EFFITAG_WEIGHTS_DIR',
  /** Where exported ONNX graphs are cached (read by model/weights-fetch.ts). */
  cacheDir: 'EFFITAG_CACHE_DIR',
  /** tfjs backend the tfjs engine must use (`tensorflow-gpu` on GPU images). */
  tfjsBackend: 'EFFITAG_TFJS_BACKEND',
  /** Overrides the tier's engine (the deploy rehearsal runs the GPU entry point on `ort`). */
  engine: 'EFFITAG_ENGINE',
  /** The long-running worker's lease on a batch, in seconds (GPU containers; default 60). */
  leaseSeconds: 'EFFITAG_LEASE_SECONDS',
  /** onnxruntime's session thread script in bundled deployments (read by inference/ort-thread.ts). */
  ortThreadScript: 'EFFITAG_ORT_THREAD_SCRIPT',
  /**
   * How often weights not published yet are looked for again, in seconds (default 60): the routers'
   * "not published" is believed this long, and waiting workers poll up to this interval. Not set by
   * the stack; the deploy rehearsal shortens it.
   */
  weightsRecheckSeconds: 'EFFITAG_WEIGHTS_RECHECK_SECONDS',
} as const;

export type EnvName = (typeof ENV)[keyof typeof ENV];
