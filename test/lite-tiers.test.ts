/**
 * EfficientNet-Lite as a tier choice (issue 25): the tiers schema takes lite0–lite4 (and a tier's
 * int8 Lite model), size-aware choice knows their resolutions, `tiers cost` prices Lite0 (float and
 * int8) from the committed Lite run and says "unmeasured" for the others, every "weights missing" hint
 * names `weights import --timm` (Lite has no Keras file for `weights fetch`), and the stack synthesizes
 * a tiers file with a Lite tier.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { S3Client } from '@aws-sdk/client-s3';
import { deploySteps } from '../cdk/deploy-steps.ts';
import { variantInfo } from '../model/info.ts';
import { LITE_VARIANTS } from '../model/spec.ts';
import { fetchWeights, WeightsFetchError } from '../model/weights-fetch.ts';
import { checkWeights } from '../pipeline/aws/wiring.ts';
import { publishTiersWeights } from '../pipeline/aws/s3-weights.ts';
import { directoryCatalog, MissingWeightsError, weightsFix } from '../pipeline/models.ts';
import { preflight } from '../pipeline/preflight.ts';
import { chooseVariant } from '../tiers/choose.ts';
import { type BenchFile, estimateCosts, REFERENCE_INT8, vectorRows } from '../tiers/cost.ts';
import { parseTiers, validateTiers } from '../tiers/schema.ts';
import { freePort } from './support/effitag-local.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { head, portFlags, put, startTestStack, waitFor } from './support/local-stack.ts';
import { KEYS } from '../pipeline/marker.ts';
import { synthStack } from './support/synth.ts';
import { deployedStackAws } from './support/preflight-aws.ts';

const FIXTURE = 'test/fixtures/tiers/lite.json';
const HUB = (v: string) => `https://huggingface.co/timm/tf_efficientnet_${v}.in1k`;

const tier = (variants: unknown[], extra: Record<string, unknown> = {}) => ({
  variants,
  compute: { target: 'lambda-cpu', memoryMb: 3538 },
  engine: 'ort',
  batchSize: 8,
  ...extra,
});
const file = (tiers: Record<string, unknown>) => ({ version: 1, tiers, routing: { default: { tier: Object.keys(tiers)[0] } } });
const errors = (raw: unknown) =>
  validateTiers(raw)
    .issues.filter((i) => i.severity === 'error')
    .map((i) => `${i.path}: ${i.message}`);

describe('tiers schema: Lite is a first-class choice', () => {
  it('accepts lite0–lite4 as variants, alone or beside B variants, with throughput keyed by them', () => {
    for (const v of LITE_VARIANTS) assert.deepEqual(errors(file({ t: tier([v]) })), [], v);
    const config = parseTiers(file({ t: tier(['efficientnet-lite0', 'b0', 'lite4'], { throughput: { lite0: 90 } }) }));
    assert.deepEqual(config.tiers.t.variants, ['lite0', 'b0', 'lite4']);
    assert.deepEqual(config.tiers.t.models, ['lite0', 'b0', 'lite4']);
    assert.deepEqual(config.tiers.t.throughput, { lite0: 90 });
  });

  it('an int8 Lite tier is the int8 model on its float variant; lite0-int8 as a variant says how to write it', () => {
    const config = parseTiers(file({ t: tier(['lite0'], { model: 'lite0-int8' }) }));
    assert.deepEqual(config.tiers.t.models, ['lite0-int8']);
    assert.deepEqual(errors(file({ t: tier(['lite0-int8']) })), [
      'tiers.t.variants[0]: "lite0-int8" is an int8 model, not a variant: write "variants": ["lite0"], "model": "lite0-int8"',
    ]);
    // As for b0-int8: an ImageNet classifier cannot be the custom model beside ImageNet's.
    assert.match(errors(file({ t: tier(['lite0'], { model: 'lite0-int8', imagenet: true }) })).join('\n'), /is an ImageNet classifier/);
    // Lite is listed among the known variants where a name is wrong.
    assert.match(errors(file({ t: tier(['lite9']) })).join('\n'), /unknown variant "lite9"; known: .*lite0, lite1, lite2, lite3, lite4/);
  });

  it('the shipped fixture (an int8 Lite0 tier and a Lite0–4 tier) validates', () => {
    const config = parseTiers(JSON.parse(readFileSync(FIXTURE, 'utf8')), FIXTURE);
    assert.deepEqual(config.models, ['lite0-int8', 'lite0', 'lite1', 'lite2', 'lite3', 'lite4']);
  });
});

describe('size-aware choice over Lite variants', () => {
  const lite = { variants: LITE_VARIANTS };
  it("uses each Lite variant's own resolution (Lite3 280 and Lite4 300, not B3's 300 and B4's 380)", () => {
    const res = Object.fromEntries(LITE_VARIANTS.map((v) => [v, variantInfo(v).resolution]));
    assert.deepEqual({ ...res }, { lite0: 224, lite1: 240, lite2: 260, lite3: 280, lite4: 300 });
    // Exactly at each native resolution (no tolerance): that variant.
    for (const v of LITE_VARIANTS) assert.equal(chooseVariant(lite, res[v], 4000, 0).variant, v, `${res[v]} px`);
    assert.equal(chooseVariant(lite, 299, 299, 0).variant, 'lite3');
    assert.equal(chooseVariant(lite, 100, 100).variant, 'lite0', 'below every resolution: the smallest');
    // Beside B3 (300 px): a 285 px image gets Lite3 (280), where B3 would upsample.
    const mixed = chooseVariant({ variants: ['b3', 'lite3', 'lite0'] }, 285, 285, 0);
    assert.equal(mixed.variant, 'lite3');
    assert.match(mixed.reason, /b3 \(300px\) would upsample/);
  });
});

describe('tiers cost prices a Lite CPU tier from the committed figures', () => {
  const config = parseTiers(
    file({
      b0: tier(['b0']),
      lite0: tier(['lite0']),
      lite0q: tier(['lite0'], { model: 'lite0-int8' }),
      lite2: tier(['lite2']),
      lite2q: tier(['lite2'], { model: 'lite2-int8' }),
      litetfjs: tier(['lite0'], { engine: 'tfjs' }),
    }),
  );
  // No decode figures: throughput is inference alone, so the ratios come out exactly.
  const bench = (lite?: BenchFile['lite']): BenchFile => ({
    machine: { cpus: 2 },
    rows: [
      { engine: 'ort', variant: 'b0', batch: 8, imagesPerSecond: 100 },
      { engine: 'tfjs', variant: 'b0', batch: 8, imagesPerSecond: 10 },
    ],
    ...(lite ? { lite } : {}),
  });
  const byTier = (rows: ReturnType<typeof estimateCosts>['rows']) => Object.fromEntries(rows.map((r) => [r.tier, r]));
  const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} vs ${b}`);

  it("Lite0 float and int8: B0's row × (Lite0 over B0's reference export ÷ float B0 over it), CPU time", () => {
    const lite = {
      rows: [
        { variant: 'b0', floatOverReferenceCpu: 0.8 },
        { variant: 'lite0', floatOverReferenceB0Cpu: 1.2, int8OverReferenceB0Cpu: 2.0 },
      ],
    };
    const r = byTier(estimateCosts(config, bench(lite)).rows);
    close(r.lite0.imagesPerSecond! / r.b0.imagesPerSecond!, 1.2 / 0.8, 'float lite0');
    close(r.lite0q.imagesPerSecond! / r.b0.imagesPerSecond!, 2.0 / 0.8, 'int8 lite0');
    assert.ok(r.lite0q.dollarsPerMillion! < r.lite0.dollarsPerMillion! && r.lite0.dollarsPerMillion! < r.b0.dollarsPerMillion!);
    assert.match(
      r.lite0q.throughputSource!,
      /b0's row × 2\.50 for lite0 int8 \(2\.00× B0's reference export ÷ float b0's 0\.80×, CPU time/,
    );
  });

  it('without a Lite run in the bench file: the committed one (bench/reference/int8.json lite)', () => {
    const committed = JSON.parse(readFileSync(REFERENCE_INT8, 'utf8')).lite.rows as {
      variant: string;
      floatOverReferenceCpu?: number;
      floatOverReferenceB0Cpu?: number;
      int8OverReferenceB0Cpu?: number;
    }[];
    const b0 = committed.find((x) => x.variant === 'b0')!.floatOverReferenceCpu!;
    const l0 = committed.find((x) => x.variant === 'lite0')!;
    const r = byTier(estimateCosts(config, bench()).rows);
    close(r.lite0.imagesPerSecond! / r.b0.imagesPerSecond!, l0.floatOverReferenceB0Cpu! / b0, 'float lite0');
    close(r.lite0q.imagesPerSecond! / r.b0.imagesPerSecond!, l0.int8OverReferenceB0Cpu! / b0, 'int8 lite0');
    assert.match(r.lite0q.throughputSource!, /bench\/reference\/int8\.json lite/);
    // The committed run measured int8 Lite0 at over 2x B0's reference export.
    assert.ok(l0.int8OverReferenceB0Cpu! > 2, String(l0.int8OverReferenceB0Cpu));
  });

  it('Lite1–4 and Lite on tfjs: unmeasured, no price, never extrapolated', () => {
    const r = byTier(estimateCosts(config, bench()).rows);
    for (const t of ['lite2', 'lite2q', 'litetfjs']) {
      assert.equal(r[t].imagesPerSecond, undefined, t);
      assert.equal(r[t].dollarsPerMillion, undefined, t);
    }
    assert.match(r.lite2.note!, /lite2: unmeasured \(npm run bench -- int8 --lite measured lite0;.*set tiers\.lite2\.throughput\.lite2/);
    assert.match(r.lite2q.note!, /lite2 int8: unmeasured/);
    assert.match(r.litetfjs.note!, /lite0 on tfjs: unmeasured/);
    // A configured figure prices it.
    const configured = parseTiers(file({ l: tier(['lite2'], { throughput: { lite2: 50 } }) }));
    assert.equal(estimateCosts(configured, bench()).rows[0].imagesPerSecond, 50);
  });

  it("an engines row of the Lite variant's own (a fresh bench) is used as it is", () => {
    const own: BenchFile = { ...bench(), rows: [...bench().rows, { engine: 'ort', variant: 'lite2', batch: 8, imagesPerSecond: 77 }] };
    const r = byTier(estimateCosts(config, own).rows);
    close(r.lite2.imagesPerSecond!, 2 / (2 / 77), 'lite2');
  });

  it("a Lite tier's vectors are 1,280 wide whatever the width (its head is fixed)", () => {
    const rows = vectorRows(parseTiers(file({ t: tier(['lite4', 'b4']) })));
    assert.deepEqual(
      rows.map((r) => [r.model, r.dimension]),
      [
        ['lite4', 1280],
        ['b4', 1792],
      ],
    );
  });
});

describe('missing Lite weights: every hint says weights import --timm, then publish', () => {
  it('weights fetch lite0 refuses before any download, naming the hub page and the import command', async () => {
    let requests = 0;
    const cache = await tempDir();
    for (const url of [undefined, 'http://127.0.0.1:9/lite0.h5']) {
      await assert.rejects(
        fetchWeights({
          variant: 'lite0',
          cache,
          ...(url ? { url, md5: '0'.repeat(32) } : {}),
          fetchImpl: async () => {
            requests++;
            throw new Error('no request expected');
          },
        }),
        (err: Error) => {
          assert.ok(err instanceof WeightsFetchError, err.message);
          assert.match(err.message, /lite0 \(EfficientNet-Lite\) has no Keras \.h5 to fetch/);
          assert.ok(err.message.includes(HUB('lite0')), err.message);
          assert.ok(
            err.message.includes(
              `npx effitag weights import --timm model.safetensors --variant lite0 --out ${join(cache, 'weights', 'lite0')}`,
            ),
            err.message,
          );
          assert.match(err.message, /weights publish/);
          return true;
        },
      );
    }
    assert.equal(requests, 0);
  });

  it('the CLI says it in one line and exits 1', async () => {
    const cache = await tempDir();
    const r = await promisify(execFile)(process.execPath, ['bin/effitag.js', 'weights', 'fetch', 'lite3', '--cache', cache], {
      env: { ...process.env, EFFITAG_LOG_LEVEL: 'warn' },
    }).then(
      () => assert.fail('weights fetch lite3 succeeded'),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(HUB('lite3')), r.stderr);
    assert.match(r.stderr, /weights import --timm model\.safetensors --variant lite3/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  it('effitag local with a Lite tiers file and no weights: stops naming the import, fetching no B0 it does not use', async () => {
    const cache = await tempDir();
    const r = await promisify(execFile)(
      process.execPath,
      [
        'bin/effitag.js',
        'local',
        '--tiers',
        FIXTURE,
        '--data',
        join(cache, 'data'),
        '--no-gallery',
        ...portFlags({ s3: await freePort(), sqs: await freePort(), dynamodb: await freePort() }),
      ],
      {
        env: {
          ...process.env,
          EFFITAG_WEIGHTS_DIR: undefined,
          EFFITAG_CACHE_DIR: cache,
          EFFITAG_LOG_LEVEL: 'warn',
          // Were B0 fetched (it must not be), the download fails at once instead of reaching out.
          EFFITAG_WEIGHTS_URL: `http://127.0.0.1:${await freePort()}/efficientnetb0.h5`,
          EFFITAG_WEIGHTS_MD5: '0'.repeat(32),
        },
        maxBuffer: 1 << 22,
      },
    ).then(
      () => assert.fail('effitag local started without weights'),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /weights missing for the configured tiers/);
    assert.match(r.stderr, /weights import --timm model\.safetensors --variant lite2 --out /);
    assert.ok(r.stderr.includes(HUB('lite2')), r.stderr);
    assert.match(r.stderr, /weights quantize --weights .*lite0 --calibrate IMAGES --out .*lite0-int8/);
    assert.doesNotMatch(r.stderr, /fetching the official EfficientNet-B0/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  it('the waiting-for-weights fix: import for Lite, quantize for its int8 model, import then publish at S3', () => {
    assert.equal(
      weightsFix('/w', 'lite1'),
      `download model.safetensors from ${HUB('lite1')} and run npx effitag weights import --timm model.safetensors --variant lite1 --out /w/lite1`,
    );
    assert.match(weightsFix('/w', 'lite0-int8'), /weights quantize --weights \/w\/lite0 .*--out \/w\/lite0-int8/);
    assert.match(
      weightsFix('s3://b/w/', 'lite0'),
      /weights import --timm .*--out DIR\/lite0, then npx effitag weights publish .* s3:\/\/b\/w\//,
    );
    // A Keras variant keeps weights fetch.
    assert.equal(weightsFix('/w', 'b0'), 'npx effitag weights fetch b0 --out /w/b0');
  });

  it('checkWeights (embedded stack start) names the import when no model of the tiers has weights', async () => {
    const dir = await tempDir();
    const tiers = parseTiers(file({ t: tier(['lite0']) }));
    assert.throws(
      () => checkWeights(tiers, directoryCatalog(dir)),
      (err: Error) =>
        err instanceof MissingWeightsError &&
        err.message.includes(`weights import --timm model.safetensors --variant lite0 --out ${join(dir, 'lite0')}`) &&
        err.message.includes(HUB('lite0')),
    );
  });

  it('weights publish --tiers lacking Lite models: import and quantize hints, nothing uploaded', async () => {
    const catalog = await tempDir();
    const s3 = new S3Client({
      region: 'us-east-1',
      endpoint: 'http://127.0.0.1:9',
      credentials: { accessKeyId: 'x', secretAccessKey: 'y' },
    });
    await assert.rejects(publishTiersWeights(s3, { models: ['lite0-int8', 'lite2'], catalog, location: 's3://b/w/' }), (err: Error) => {
      assert.match(err.message, /lacks: lite0-int8, lite2/);
      assert.ok(err.message.includes(`--variant lite2 --out ${join(catalog, 'lite2')}`), err.message);
      assert.ok(err.message.includes(HUB('lite2')), err.message);
      assert.ok(
        err.message.includes(
          `weights quantize --weights ${join(catalog, 'lite0')} --calibrate IMAGES --out ${join(catalog, 'lite0-int8')}`,
        ),
      );
      assert.doesNotMatch(err.message, /train lite/);
      assert.match(err.message, /Nothing was uploaded/);
      return true;
    });
  });

  it("preflight: a Lite model missing under the stack's WeightsLocation gets import, then publish", async () => {
    const tiers = parseTiers(JSON.parse(readFileSync(FIXTURE, 'utf8')), FIXTURE);
    const aws = deployedStackAws({
      headObject: async (_b, key) => (key === 'weights/lite0-int8/manifest.json' ? 'present' : 'missing'),
    });
    const report = await preflight(aws, {
      stackName: 'EffiTag',
      tiers,
      tiersFile: FIXTURE,
      context: { prefixes: [''], events: 's3', index: true },
    });
    const weights = report.rows.filter((r) => r.check === 'weights');
    assert.deepEqual(
      weights.map((r) => [r.subject, r.status]),
      tiers.models.map((m) => [m, m === 'lite0-int8' ? 'ok' : 'missing']),
    );
    const lite3 = weights.find((r) => r.subject === 'lite3')!;
    assert.ok(lite3.fix?.includes(HUB('lite3')), lite3.fix);
    assert.match(
      lite3.fix!,
      /weights import --timm model\.safetensors --variant lite3 --out DIR\/lite3, then effitag weights publish --tiers test\/fixtures\/tiers\/lite\.json --weights DIR s3:\/\/wb\/weights\//,
    );
  });
});

describe('a Lite0 tier on the embedded stack', () => {
  it('tags an upload with lite0 (its marker) from a Lite0 artifact in the catalog (random weights, the artifact layout every import writes)', async () => {
    const weights = await tempDir('effitag-lite-weights-');
    await randomArtifact(join(weights, 'lite0'), 'lite0', { seed: 3 });
    const { stack } = await startTestStack(file({ t: tier(['lite0'], { topK: 3, minConfidence: 0 }) }), { weightsDir: weights });
    try {
      await put(stack, 'photo.jpg', await gradientImage(320, 240));
      const meta = await waitFor(
        'tags on photo.jpg',
        async () => {
          const m = (await head(stack, 'photo.jpg')).Metadata;
          return m?.[KEYS.status] === 'tagged' ? m : m?.[KEYS.status] === 'failed' ? assert.fail(m[KEYS.reason]) : undefined;
        },
        120_000,
      );
      assert.match(meta[KEYS.model], /^lite0@[0-9a-f]{12}$/);
      assert.equal(meta[KEYS.tags].split(';').length, 3);
    } finally {
      await stack.stop();
    }
  });
});

describe('the stack and the deploy steps take a Lite tiers file', () => {
  it('cdk synth: a lite0-int8 CPU tier and a Lite0–4 tier get their Lambdas, with the tiers passed to the runtimes', () => {
    const { template } = synthStack({ 'effitag:tiersFile': join(process.cwd(), FIXTURE) });
    const fns = Object.values(template.findResources('AWS::Lambda::Function')).map(
      (f) => (f.Properties.Environment?.Variables ?? {}) as Record<string, unknown>,
    );
    const tierFns = fns.filter((v) => typeof v.EFFITAG_TIER === 'string').map((v) => v.EFFITAG_TIER);
    assert.deepEqual(tierFns.sort(), ['fast', 'lite']);
    const tiersJson = fns.map((v) => v.EFFITAG_TIERS).find((t) => typeof t === 'string') as string;
    assert.ok(tiersJson, 'EFFITAG_TIERS passed to the runtimes');
    const passed = parseTiers(JSON.parse(tiersJson));
    assert.equal(passed.tiers.fast.model, 'lite0-int8');
    assert.deepEqual(passed.tiers.lite.variants, LITE_VARIANTS);
  });

  it('the fetch step imports Lite from timm and quantizes the int8 model (no weights fetch of a Lite variant)', () => {
    const fetch = deploySteps(FIXTURE).find((s) => s.id === 'fetch')!;
    const command = fetch.command.join('\n');
    for (const v of LITE_VARIANTS)
      assert.ok(
        command.includes(`npx effitag weights import --timm ${v}.safetensors --variant ${v} --out ~/.cache/effitag/weights/${v}`),
        v,
      );
    assert.match(
      command,
      /weights quantize --weights ~\/\.cache\/effitag\/weights\/lite0 --calibrate IMAGES --out ~\/\.cache\/effitag\/weights\/lite0-int8/,
    );
    assert.doesNotMatch(command, /weights fetch/);
    assert.ok(fetch.explain.join('\n').includes(HUB('lite4')));
  });
});
