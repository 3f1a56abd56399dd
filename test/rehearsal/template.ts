/**
 * The synthesized cloud assembly, read as CloudFormation would: `cdk synth` into a directory far from
 * any node_modules, then the template's resources, their asset directories, and a resolver for the
 * intrinsic functions (Ref, Fn::GetAtt, Fn::Join, …) against the physical names the rehearsal's
 * stand-ins gave each resource.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../cdk/constructs/bundling.ts';
import { copyTree } from './lambda.ts';
import { CHECKOUT_DIR, cached, runTemp } from './paths.ts';

export interface CfnResource {
  Type: string;
  Properties?: Record<string, any>;
  Metadata?: Record<string, any>;
  DependsOn?: string | string[];
}

export interface Assembly {
  outdir: string;
  template: { Resources: Record<string, CfnResource> };
  /** The asset directory of a resource (Lambda code, layer), from its aws:asset:path metadata. */
  assetDir(logicalId: string): string;
  ofType(type: string): [string, CfnResource][];
}

export const REGION = 'us-east-1';
export const ACCOUNT = '111111111111';
/** The tiers files the rehearsal deploys: what ships (the defaults first, then every example). */
export const SHIPPED_TIERS: readonly string[] = [
  'tiers/defaults.json',
  ...readdirSync(join(REPO_ROOT, 'examples', 'tiers'))
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => `examples/tiers/${f}`),
];

/**
 * Synthesize with the CDK CLI, as `cdk deploy` would, into this run's own folder (test/rehearsal/
 * paths.ts): far from the repository's node_modules (so a bundle cannot find modules it does not
 * ship), and seeded with this checkout's cached Lambda layers, so the layer's npm install is reused
 * (its asset hash is the layer's package.json, build script and architecture: a cached layer with
 * the same hash has the same contents, and CDK skips bundling an asset whose folder exists).
 */
export async function synthesize(
  options: { outdir?: string; tiersFile?: string; context?: Record<string, string> } = {},
): Promise<Assembly> {
  const outdir = options.outdir ?? join(runTemp('synth-'), 'cdk.out');
  for (let d = dirname(outdir); d !== dirname(d); d = dirname(d)) {
    if (existsSync(join(d, 'node_modules'))) throw new Error(`${d}/node_modules exists: the rehearsal must run far from any node_modules`);
  }
  mkdirSync(outdir, { recursive: true });
  const layerCache = join(CHECKOUT_DIR, 'cache');
  for (const entry of existsSync(layerCache) ? readdirSync(layerCache) : []) {
    const m = /^layer-(asset\.[0-9a-f]{64})$/.exec(entry);
    if (m && !existsSync(join(outdir, m[1]))) copyTree(join(layerCache, entry), join(outdir, m[1]));
  }
  await promisify(execFile)(
    join(REPO_ROOT, 'node_modules', '.bin', 'cdk'),
    [
      'synth',
      '--quiet',
      '--output',
      outdir,
      '--context',
      `effitag:tiersFile=${options.tiersFile ?? SHIPPED_TIERS[0]}`,
      ...Object.entries(options.context ?? {}).flatMap(([k, v]) => ['--context', `${k}=${v}`]),
      // Environment-agnostic, as `cdk synth` without credentials: the account and region are the
      // template's pseudo parameters, which the resolver fills in.
    ],
    {
      cwd: REPO_ROOT,
      maxBuffer: 64 * 1024 * 1024,
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CDK_DEFAULT_'))),
    },
  );
  const assembly = readAssembly(outdir);
  // The output folder is kept between runs (for the layer); assets of earlier builds are not.
  const manifest = JSON.parse(readFileSync(join(outdir, 'EffiTag.assets.json'), 'utf8')) as {
    files?: Record<string, { source: { path?: string } }>;
    dockerImages?: Record<string, { source: { directory?: string } }>;
  };
  const live = new Set(
    [
      ...Object.values(manifest.files ?? {}).map((a) => a.source.path),
      ...Object.values(manifest.dockerImages ?? {}).map((a) => a.source.directory),
    ].filter(Boolean),
  );
  for (const entry of readdirSync(outdir)) {
    if (entry.startsWith('asset.') && !live.has(entry)) rmSync(join(outdir, entry), { recursive: true, force: true });
  }
  for (const [id] of assembly.ofType('AWS::Lambda::LayerVersion')) {
    const dir = assembly.assetDir(id);
    await cached(`layer-${basename(dir)}`, (tmp) => copyTree(dir, tmp));
  }
  return assembly;
}

export function readAssembly(outdir: string, stack = 'EffiTag'): Assembly {
  const template = JSON.parse(readFileSync(join(outdir, `${stack}.template.json`), 'utf8'));
  return {
    outdir,
    template,
    assetDir(this: Assembly, logicalId) {
      const path = this.template.Resources[logicalId]?.Metadata?.['aws:asset:path'];
      if (!path) throw new Error(`${logicalId} has no asset in the assembly`);
      return join(outdir, path);
    },
    // `this`, so that a copy with another template ({ ...assembly, template }) reads its own.
    ofType(this: Assembly, type) {
      return Object.entries(this.template.Resources).filter(([, r]) => r.Type === type);
    },
  };
}

/** Physical values of one resource: what `Ref` gives, and its `Fn::GetAtt` attributes. */
export interface Physical {
  ref: string;
  attributes: Record<string, string>;
}

/** Resolves intrinsic functions against physical values; unresolvable references throw. */
export class Resolver {
  constructor(private readonly physical: (logicalId: string) => Physical | undefined) {}

  resolve(value: unknown): any {
    if (Array.isArray(value)) return value.map((v) => this.resolve(v));
    if (!value || typeof value !== 'object') return value;
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 1) {
      const [fn, arg] = entries[0];
      switch (fn) {
        case 'Ref':
          return this.ref(arg as string);
        case 'Fn::GetAtt': {
          const [id, attr] = Array.isArray(arg) ? (arg as string[]) : String(arg).split('.');
          const p = this.physical(id);
          const v = p?.attributes[attr];
          if (v === undefined) throw new Error(`cannot resolve Fn::GetAtt ${id}.${attr}`);
          return v;
        }
        case 'Fn::Join': {
          const [sep, parts] = arg as [string, unknown[]];
          return (this.resolve(parts) as unknown[]).join(sep);
        }
        case 'Fn::Select': {
          const [i, list] = arg as [number, unknown];
          return (this.resolve(list) as unknown[])[Number(this.resolve(i))];
        }
        case 'Fn::Split': {
          const [sep, s] = arg as [string, unknown];
          return String(this.resolve(s)).split(sep);
        }
        case 'Fn::Sub': {
          const [text, vars] = typeof arg === 'string' ? [arg, {}] : (arg as [string, Record<string, unknown>]);
          return text.replace(/\$\{([^}]+)\}/g, (_, name: string) => {
            if (name in vars) return String(this.resolve(vars[name]));
            if (name.includes('.')) {
              const [id, attr] = name.split('.');
              return this.resolve({ 'Fn::GetAtt': [id, attr] });
            }
            return this.ref(name);
          });
        }
        default:
          if (fn.startsWith('Fn::')) throw new Error(`the rehearsal does not resolve ${fn}`);
      }
    }
    return Object.fromEntries(entries.map(([k, v]) => [k, this.resolve(v)]));
  }

  private ref(id: string): string {
    switch (id) {
      case 'AWS::Region':
        return REGION;
      case 'AWS::AccountId':
        return ACCOUNT;
      case 'AWS::Partition':
        return 'aws';
      case 'AWS::URLSuffix':
        return 'amazonaws.com';
      case 'AWS::StackName':
        return 'EffiTag';
      default: {
        const p = this.physical(id);
        if (!p) throw new Error(`cannot resolve Ref ${id}`);
        return p.ref;
      }
    }
  }
}
