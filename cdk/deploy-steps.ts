/**
 * The deploy steps, once: the README's "Deploying (AWS)" command block is rendered from this list
 * (test/deploy-steps.test.ts holds them equal; `node --import tsx scripts/deploy-steps.ts --write`
 * rewrites the block), and the deploy rehearsal (test/rehearsal/run.ts) runs the same steps in the
 * same order, each with the stand-in it uses where AWS or the internet is needed. A step added,
 * moved or reworded here moves in both.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { int8Base } from '../model/spec.ts';
import { parseTiers } from '../tiers/schema.ts';

// Not bundling.ts's REPO_ROOT: that module loads aws-cdk-lib, which the README check does not need.
const REPO_ROOT = join(import.meta.dirname, '..');

export type DeployStepId = 'deploy' | 'fetch' | 'publish' | 'upload';

export interface DeployStep {
  id: DeployStepId;
  /** The comment above the command in the README (one line each). */
  explain: string[];
  /** The command, one line per element (rendered with ` \` continuations). */
  command: string[];
  /** What the rehearsal runs instead, and why (AWS and the internet are out of its reach). */
  standIn: string;
}

/** The tiers file the README deploys. */
export const README_TIERS = 'tiers/defaults.json';

/** Every model a tiers file needs published (variants, and custom models by name), in the file's order. */
export function modelsOf(tiersFile: string): string[] {
  const path = join(REPO_ROOT, tiersFile);
  return [...parseTiers(JSON.parse(readFileSync(path, 'utf8')), path).models];
}

/** The steps for a tiers file (the README shows them for tiers/defaults.json). */
export function deploySteps(tiersFile = README_TIERS): DeployStep[] {
  // Official weights exist for the variants only; a custom model's artifact comes from `effitag train`.
  // An int8 model is its float model quantized (`weights quantize`), so that float model is fetched too.
  const models = modelsOf(tiersFile);
  const floats = [...new Set(models.map((m) => int8Base(m) ?? m))];
  const fetchable = floats.filter((m) => /^(b[0-7]|v2-(b[0-3]|s|m|l))$/.test(m));
  // EfficientNet-Lite has no Keras file: timm's port on the Hugging Face hub, imported (model/weights-timm.ts).
  const lite = floats.filter((m) => /^lite[0-4]$/.test(m));
  const int8 = models.filter((m) => int8Base(m) !== undefined);
  const cache = '~/.cache/effitag/weights';
  const fetchCommand =
    [
      ...(fetchable.length ? [`for v in ${fetchable.join(' ')}; do npx effitag weights fetch "$v"; done`] : []),
      ...lite.map((m) => `npx effitag weights import --timm ${m}.safetensors --variant ${m} --out ${cache}/${m}`),
      ...int8.map((m) => `npx effitag weights quantize --weights ${cache}/${int8Base(m)} --calibrate IMAGES --out ${cache}/${m}`),
    ].join('; ') || `for v in ${fetchable.join(' ')}; do npx effitag weights fetch "$v"; done`;
  return [
    {
      id: 'deploy',
      explain: [
        '1. Deploy (creates the bucket and a weights bucket, unless given). It comes up with no weights:',
        '   GPU tasks start and wait for them; uploads wait, untagged, with a WARN log naming the model to publish.',
      ],
      command: [
        `npx cdk deploy -c effitag:tiersFile=${tiersFile}`,
        '[-c effitag:bucketName=my-photos] [-c effitag:prefixes=photos/,scans/]',
        '[-c effitag:bucketKmsKeyArn=arn:…] [-c effitag:vpcId=vpc-…] [-c effitag:alarmEmail=ops@example.com]',
        '[-c effitag:index=false]   # no tag index: no search, $4.96 per 1M images less',
      ],
      standIn:
        'cdk synth (the CLI, environment-agnostic), then the template run as AWS runs it: every bucket, queue and table on the embedded S3/SQS/DynamoDB stand-ins, each Node Lambda from its asset and layers, each GPU task definition as a container process on the CPU engine (no GPU here)',
    },
    {
      id: 'fetch',
      explain: [
        `2. Get the official weights of every model ${tiersFile} uses (downloaded once, MD5-checked, converted).`,
        ...lite.map(
          (m) =>
            `   ${m} (EfficientNet-Lite, no Keras file): ${m}.safetensors is model.safetensors from https://huggingface.co/timm/tf_efficientnet_${m}.in1k`,
        ),
        ...(int8.length
          ? ['   An int8 model: its float model quantized, calibrated on your own images (IMAGES, a folder or s3://…).']
          : []),
      ],
      command: [fetchCommand],
      standIn:
        'no internet here: random weights in the same artifact layout (manifest + weights.bin, per model folder of the catalog), generated once and kept in the rehearsal cache folder',
    },
    {
      id: 'publish',
      explain: [
        "3. Publish them to the stack's weights location (its outputs, read by name): workers pick them up without",
        "   a redeploy; then the stack's backfill state machine tags what was uploaded while they were missing.",
      ],
      command: [`npx effitag --stack EffiTag weights publish --tiers ${tiersFile} --backfill s3://<bucket>`],
      standIn:
        "the same command (effitag --stack EffiTag weights publish --tiers) against the embedded S3, the stack's outputs answered by a CloudFormation stand-in (DescribeStacks); the backfill runs the synthesized state machine on the stand-ins instead of Step Functions",
    },
    {
      id: 'upload',
      explain: ['4. Upload an image and read its tags.'],
      command: [
        'aws s3 cp photo.jpg s3://<bucket>/uploads/photo.jpg &&',
        'aws s3api head-object --bucket <bucket> --key uploads/photo.jpg --query Metadata',
      ],
      standIn:
        "an S3 client against the embedded S3; the bucket's notification rules, or in EventBridge mode the stack's rule, deliver the event as AWS would",
    },
  ];
}

/** The README's command block (without the fences). */
export function renderDeploySteps(steps: DeployStep[] = deploySteps()): string {
  return steps
    .map((s) => [...s.explain.map((l) => `# ${l}`), s.command.map((l, i) => (i ? `  ${l}` : l)).join(' \\\n')].join('\n'))
    .join('\n\n');
}

/** Where the block sits in the README: the first ```sh fence after the "**Deploy:**" line. */
export function deployBlockRange(readme: string): { start: number; end: number } {
  const anchor = readme.indexOf('\n**Deploy:**\n');
  if (anchor < 0) throw new Error('README.md has no "**Deploy:**" paragraph');
  const open = readme.indexOf('```sh\n', anchor);
  const end = readme.indexOf('\n```', open + 6);
  if (open < 0 || end < 0) throw new Error('README.md has no ```sh block after "**Deploy:**"');
  return { start: open + 6, end };
}

export function readmeDeployBlock(readme: string): string {
  const { start, end } = deployBlockRange(readme);
  return readme.slice(start, end);
}

export function withDeployBlock(readme: string, block = renderDeploySteps()): string {
  const { start, end } = deployBlockRange(readme);
  return readme.slice(0, start) + block + readme.slice(end);
}
