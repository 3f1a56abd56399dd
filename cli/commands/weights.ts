import { parseS3Folder, parseS3Url } from '../../base/s3-url.ts';
import type { Command } from 'commander';
import { byteProgress } from '../progress.ts';
import { fetchWeights } from '../../model/weights-fetch.ts';
import { importKerasWeights, readManifest, type NormalizationMode } from '../../model/weights.ts';
import { parseNumber, thousands } from '../format.ts';
import { checkReadableFiles, checkReadableFolder } from '../local-files.ts';
import { ensureOnnx } from '../../model/onnx/cache.ts';
import { resolve } from 'node:path';
import { MARKER_MISSING_TTL_MS } from '../../pipeline/aws/markers.ts';
import { publishTiersWeights, publishWeights } from '../../pipeline/aws/s3-weights.ts';
import { defaultWeightsDir } from '../../pipeline/aws/wiring.ts';
import { folderCalibrationSource, quantizeArtifact, s3CalibrationSource } from '../../model/quantize.ts';
import { loadTiers } from '../../tiers/load.ts';
import { openCommandStack, stackArgs } from '../stack.ts';
import type { StackHandle } from '../../pipeline/aws/stack-handle.ts';

export function registerWeightsCommands(program: Command): void {
  const weights = program.command('weights').description('official Keras weights → EffiTag weights artifacts');

  weights
    .command('import')
    .description(
      'convert a Keras .h5 weight file (V1 or V2, with or without top), or EfficientNet-Lite weights in timm layout (.safetensors), into an artifact directory',
    )
    .option('--keras <file>', 'Keras .h5 weight file (B0–B7, V2)')
    .option('--timm <file>', "timm-safetensors layout: timm's tf_efficientnet_liteN model.safetensors (lite0…lite4)")
    .requiredOption('--variant <variant>', 'variant the file belongs to, e.g. b0, v2-s or lite0')
    .requiredOption('--out <dir>', 'artifact directory to write')
    .option('--normalization <mode>', 'V1 normalization variance: auto | std-as-variance | variance', 'auto')
    .option('--json', 'print the artifact manifest as JSON')
    .action(
      async (opts: { keras?: string; timm?: string; variant: string; out: string; normalization: NormalizationMode; json?: boolean }) => {
        if (!['auto', 'std-as-variance', 'variance'].includes(opts.normalization))
          throw new Error(`--normalization must be auto, std-as-variance or variance`);
        if (!opts.keras === !opts.timm) throw new Error('give exactly one of --keras <file.h5> and --timm <file.safetensors>');
        // A path that cannot be read is one line naming it (it was Node's "ENOENT: …, open '…'").
        await checkReadableFiles([opts.timm ?? opts.keras!], opts.timm ? '--timm' : '--keras');
        const m = opts.timm
          ? await (await import('../../model/weights-timm.ts')).importTimmWeights(opts.timm, { variant: opts.variant, out: opts.out })
          : await importKerasWeights(opts.keras!, { variant: opts.variant, out: opts.out, normalization: opts.normalization });
        if (opts.json) return void process.stdout.write(`${JSON.stringify({ out: opts.out, manifest: m }, null, 2)}\n`);
        process.stdout.write(
          `${opts.out}: ${m.variant}${m.includeTop ? ` with ${m.classes}-class top` : ' without top'}, ${m.tensors.length} tensors, ${thousands(m.bytes)} bytes, sha256 ${m.sha256}\n`,
        );
        if (m.source.note) process.stdout.write(`note: ${m.source.note}\n`);
      },
    );

  weights
    .command('fetch')
    .description('download the official Keras weights (MD5-checked, cached) and convert them')
    .argument('<variant>', 'b0…b7, v2-b0…v2-b3, v2-s, v2-m, v2-l')
    .option('--notop', 'the file without the classifier top')
    .option('--url <url>', 'download from this URL instead (env EFFITAG_WEIGHTS_URL); needs --md5')
    .option('--md5 <hex>', 'expected MD5 of the file at --url (env EFFITAG_WEIGHTS_MD5)')
    .option('--out <dir>', 'artifact directory (default: in the cache)')
    .option('--cache <dir>', 'cache directory (default: $EFFITAG_CACHE_DIR or ~/.cache/effitag)')
    .option('--json', 'print the result as JSON')
    .action(async (variant: string, o: { notop?: boolean; url?: string; md5?: string; out?: string; cache?: string; json?: boolean }) => {
      const { json, ...opts } = o;
      const result = await fetchWeights({ variant, ...opts, progress: process.stderr.isTTY ? byteProgress(`${variant}`) : undefined });
      if (json) {
        const { h5Path, dir, downloaded, converted } = result;
        return void process.stdout.write(
          `${JSON.stringify({ h5Path, dir, downloaded, converted, sha256: result.manifest.sha256 }, null, 2)}\n`,
        );
      }
      process.stdout.write(`${result.downloaded ? 'downloaded' : 'cached'} ${result.h5Path}\n`);
      process.stdout.write(`${result.converted ? 'converted' : 'reused'} ${result.dir} (sha256 ${result.manifest.sha256})\n`);
    });

  weights
    .command('export-onnx')
    .description('export the ONNX graph of a weights artifact (BatchNorm folded, preprocessing inside, dynamic batch)')
    .requiredOption('--weights <dir>', 'weights artifact directory')
    .option('--variant <variant>', 'expected variant of the weights (checked)')
    .option('--out <file>', 'write here instead of the cache beside the weights')
    .option('--json', 'print {path, cached} as JSON')
    .action(async (opts: { weights: string; variant?: string; out?: string; json?: boolean }) => {
      const r = await ensureOnnx(opts.weights, { variant: opts.variant, out: opts.out });
      if (opts.json) return void process.stdout.write(`${JSON.stringify({ path: r.path, cached: r.cached })}\n`);
      process.stdout.write(`${r.cached ? 'cached' : 'exported'} ${r.path}\n`);
    });

  weights
    .command('quantize')
    .description(
      'static int8 quantization for the ort engine: ranges calibrated on your images, checked on held-out ones against the float model (refused below 99 % top-1 agreement)',
    )
    .requiredOption('--weights <dir>', 'the float weights artifact')
    .requiredOption('--calibrate <location>', 'images: a folder (searched recursively) or s3://bucket/prefix')
    .requiredOption('--out <dir>', 'artifact directory to write (in a catalog: <model>-int8, e.g. b0-int8)')
    .option('--images <n>', 'most images to read (a quarter held out for the check)', parseNumber('--images', 2, 100_000), 200)
    .option('--ops <ops>', 'int8 ops: all (convolutions, swish, squeeze-and-excite, adds) or conv (convolutions only)', 'all')
    .option(
      '--weight-bits <bits>',
      'int8 weight range: 7 ([-63, 63]: exact on CPUs without VNNI, whose u8×s8 pairs saturate at 16 bits) or 8 ([-127, 127])',
      '7',
    )
    .option('--force', 'write the model even below 99 % top-1 agreement (the manifest records the figures)')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        opts: {
          weights: string;
          calibrate: string;
          out: string;
          images: number;
          ops: string;
          weightBits: string;
          force?: boolean;
          json?: boolean;
        },
        command: Command,
      ) => {
        if (opts.ops !== 'all' && opts.ops !== 'conv') throw new Error('--ops must be all or conv');
        if (opts.weightBits !== '7' && opts.weightBits !== '8') throw new Error('--weight-bits must be 7 or 8');
        // A local folder that cannot be read is one line naming it (it was Node's "ENOENT: …, scandir '…'").
        if (!opts.calibrate.startsWith('s3://')) await checkReadableFolder(opts.calibrate, '--calibrate');
        // s3:// images are read from the stack --stack names (the embedded one by default).
        const source = opts.calibrate.startsWith('s3://')
          ? s3CalibrationSource((await openCommandStack(command)).store, opts.calibrate)
          : folderCalibrationSource(resolve(opts.calibrate));
        const r = await quantizeArtifact({
          weightsDir: resolve(opts.weights),
          source,
          out: resolve(opts.out),
          images: opts.images,
          ops: opts.ops,
          weightBits: opts.weightBits === '8' ? 8 : 7,
          force: opts.force,
          log: (m) => process.stderr.write(`${m}\n`),
        });
        const a = r.record.agreement[0];
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ out: opts.out, variant: r.manifest.variant, ...r.record }, null, 2)}\n`);
          return;
        }
        process.stdout.write(
          `${opts.out}: int8 ${r.manifest.variant} (${r.record.ops} ops), top-1 agreement ${(100 * a.top1).toFixed(1)} %, top-5 overlap ${(100 * a.top5Overlap).toFixed(1)} % on ${a.images} held-out image(s) at ${a.resolution}${r.record.forced ? ' (FORCED below the 99 % gate)' : ''}\n`,
        );
      },
    );

  weights
    .command('publish')
    .description(
      "upload weights to the stack's S3 (s3://bucket/prefix/<variant>/, or <NAME>/ for a custom model): one artifact, or with --tiers every model a tiers file needs",
    )
    .option(
      '--weights <dir>',
      "weights artifact directory; with --tiers, the local catalog holding DIR/<model>/ (default: the cache's weights/)",
    )
    .option('--variant <variant>', 'expected variant of the weights (checked)')
    .option('--tiers <file>', 'publish every model this tiers file uses, from the catalog --weights DIR')
    .option('--allow-missing', 'with --tiers: publish what the catalog has and list what it lacks (their objects keep waiting)')
    .option(
      '--backfill <target>',
      'after publishing, tag what waited: backfill s3://bucket[/prefix] (the watched bucket) for objects without tags',
    )
    .option(
      '--backfill-delay <seconds>',
      "wait this long before the backfill: routers re-read a missing model's manifest once a minute",
      parseNumber('--backfill-delay', 0, 3600),
      MARKER_MISSING_TTL_MS / 1000,
    )
    .option('--json', 'print what was published as JSON')
    .argument('[s3url]', "where to publish, s3://bucket/prefix (default: the stack's weights location, the output WeightsLocation)")
    .action(async (urlArg: string | undefined, opts: PublishCli, command: Command) => {
      if (opts.allowMissing && !opts.tiers) throw new Error('--allow-missing works with --tiers');
      const backfill = opts.backfill ? parseS3Url(opts.backfill) : undefined;
      // The stack --stack names (the embedded one by default): its S3, and a deployed stack's WeightsLocation.
      const stack = await openCommandStack(command);
      const url =
        urlArg ??
        (stack.handle.weightsLocation.startsWith('s3://') ? stack.handle.weightsLocation : undefined) ??
        (() => {
          throw new Error(
            `stack ${stack.handle.name} reads its weights from the folder ${stack.handle.weightsLocation}, not S3: name where to publish (s3://bucket/prefix)`,
          );
        })();
      parseS3Folder(url);
      const { s3 } = stack;
      const results: unknown[] = [];
      const say = (line: string, result: unknown) => {
        results.push(result);
        if (!opts.json) process.stdout.write(line);
      };
      const bucketOf = `s3://${parseS3Url(url).bucket}`;
      if (opts.tiers) {
        if (opts.variant) throw new Error('--variant checks one artifact; with --tiers each model is checked against its folder');
        const { path, config } = loadTiers(opts.tiers);
        const catalog = resolve(opts.weights ?? defaultWeightsDir());
        const r = await publishTiersWeights(s3, {
          models: config.models,
          catalog,
          location: url,
          allowMissing: opts.allowMissing,
          tiersPath: path,
        });
        for (const p of r.published)
          say(`published ${p.model} (sha256 ${p.sha256}) to ${p.keys.map((k) => `${bucketOf}/${k}`).join(', ')}\n`, {
            published: p.model,
            sha256: p.sha256,
            objects: p.keys.map((k) => `${bucketOf}/${k}`),
          });
        for (const m of r.unchanged) say(`already published ${m} (same sha256)\n`, { unchanged: m });
        for (const m of r.lacking) results.push({ lacking: m });
        if (r.lacking.length)
          process.stderr.write(`not published (not in ${catalog}): ${r.lacking.join(', ')}; objects of these models wait until they are\n`);
      } else {
        if (!opts.weights) throw new Error('--weights DIR is needed (an artifact directory), or --tiers FILE');
        const m = await readManifest(opts.weights);
        if (opts.variant && m.variant !== opts.variant) throw new Error(`${opts.weights} holds ${m.variant}, not ${opts.variant}`);
        const r = await publishWeights(s3, opts.weights, url);
        say(`published ${r.manifest.variant} (sha256 ${r.manifest.sha256}) to ${r.keys.map((k) => `${bucketOf}/${k}`).join(', ')}\n`, {
          published: r.manifest.variant,
          sha256: r.manifest.sha256,
          objects: r.keys.map((k) => `${bucketOf}/${k}`),
        });
      }
      if (opts.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      stack.close();
      if (backfill) await catchUp(program, command, backfill, opts, stack.handle);
    });
}

interface PublishCli {
  weights?: string;
  variant?: string;
  tiers?: string;
  allowMissing?: boolean;
  backfill?: string;
  backfillDelay: number;
  json?: boolean;
}

/**
 * Tag what waited for these weights: objects uploaded before they were published carry no tags, so
 * a backfill of objects without tags (`--only-missing`) finds them. The routers re-read a missing
 * model's manifest once a minute, so the backfill starts after that delay: uploads in between are
 * covered too. A deployed stack: its state machine (`backfill --remote`); the embedded stack: the
 * `effitag backfill` path, here. Either on the same `--stack`.
 */
async function catchUp(
  program: Command,
  command: Command,
  target: { bucket: string; prefix: string },
  opts: PublishCli,
  handle: StackHandle,
): Promise<void> {
  const url = `s3://${target.bucket}${target.prefix ? `/${target.prefix}` : ''}`;
  if (opts.backfillDelay > 0) {
    process.stderr.write(`waiting ${opts.backfillDelay} s for the routers to see the new weights, then backfilling ${url}\n`);
    await new Promise((r) => setTimeout(r, opts.backfillDelay * 1000));
  }
  const args = [...stackArgs(command), 'backfill', url, '--only-missing'];
  if (handle.backfillStateMachine) args.push('--remote');
  else if (opts.tiers) args.push('--tiers', opts.tiers);
  await program.parseAsync(args, { from: 'user' });
}
