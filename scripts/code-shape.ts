/**
 * The shape of the source (tests excluded): the largest files and the longest functions, in lines.
 * A review aid, not a gate: `npm run shape [-- --top N]`. Functions are every function-like node
 * (declarations, methods, arrows, constructors) measured from its first to its last line, so an
 * outer function's length includes the closures inside it — which is the point.
 *
 * `npm run shape -- --json` prints the same figures and the import graph's layers (top-level folders as
 * parts; a part's layer is one above the highest part it imports, so an import that points up a layer
 * can only come from a cycle) and the CLI's option lines per command, read from `buildProgram()`
 * without running a command: the measure kept in bench/reference/code-shape.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join, normalize } from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';

// `npm run shape | head` closes stdout early: that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const top = Number(process.argv[process.argv.indexOf('--top') + 1]) || 5;
const asJson = process.argv.includes('--json');
// `--follow NAME`: where the function NAME lives, its length, and the files its file reaches by imports.
const follow = process.argv.includes('--follow') ? process.argv[process.argv.indexOf('--follow') + 1] : undefined;
const files = execFileSync('git', ['ls-files', '*.ts', '*.mjs', '*.cjs'], { encoding: 'utf8' })
  .split('\n')
  .filter((f) => f && !f.startsWith('test/') && !f.endsWith('.d.ts'));

interface Measured {
  where: string;
  lines: number;
}
const fileSizes: Measured[] = [];
const functions: Measured[] = [];
/** file → the files of this tree it imports (static imports, re-exports, `import('literal')`). */
const imports = new Map<string, Set<string>>();

/** `./x.js` and `./x.ts` both name x.ts (the tree imports TypeScript by either suffix). */
const resolveImport = (from: string, spec: string): string | undefined => {
  if (!spec.startsWith('.')) return undefined;
  const base = normalize(join(dirname(from), spec));
  const candidates = [base, base.replace(/\.js$/, '.ts'), base.replace(/\.mjs$/, '.mts'), `${base}.ts`, join(base, 'index.ts')];
  return candidates.find((c) => files.includes(c));
};
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  fileSizes.push({ where: file, lines: text.split('\n').length - (text.endsWith('\n') ? 1 : 0) });
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const targets = new Set<string>();
  imports.set(file, targets);
  const visit = (node: ts.Node, owner: string) => {
    const spec =
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)
        ? node.moduleSpecifier.text
        : ts.isCallExpression(node) &&
            node.expression.kind === ts.SyntaxKind.ImportKeyword &&
            node.arguments[0] &&
            ts.isStringLiteral(node.arguments[0])
          ? node.arguments[0].text
          : undefined;
    const target = spec === undefined ? undefined : resolveImport(file, spec);
    if (target && target !== file) targets.add(target);
    let name = owner;
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const named = (node as ts.FunctionLikeDeclaration).name;
      const parent = node.parent;
      name =
        named && ts.isIdentifier(named)
          ? named.text
          : ts.isVariableDeclaration(parent) && ts.isIdentifier(parent.name)
            ? parent.name.text
            : ts.isPropertyAssignment(parent) && ts.isIdentifier(parent.name)
              ? parent.name.text
              : ts.isConstructorDeclaration(node)
                ? 'constructor'
                : '(anonymous)';
      if (owner) name = `${owner} › ${name}`;
      const start = source.getLineAndCharacterOfPosition(node.getStart()).line;
      const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      functions.push({ where: `${file}:${start + 1} ${name}`, lines: end - start + 1 });
    } else if (ts.isClassDeclaration(node) && node.name) {
      name = node.name.text;
    }
    ts.forEachChild(node, (child) => visit(child, name));
  };
  visit(source, '');
}

const show = (title: string, items: Measured[]) => {
  process.stdout.write(`${title}\n`);
  for (const m of items.sort((a, b) => b.lines - a.lines).slice(0, top))
    process.stdout.write(`  ${String(m.lines).padStart(5)}  ${m.where}\n`);
};
if (!asJson) {
  show(`largest files (lines) of ${files.length}`, fileSizes);
  show('longest functions (lines, closures included)', functions);
} else {
  process.stdout.write(`${JSON.stringify(await measure(), null, 2)}\n`);
}

/** A file's part: its top-level folder (a file at the root is a part of its own). */
function partOf(file: string): string {
  return file.includes('/') ? file.slice(0, file.indexOf('/')) : file;
}

/** Layers by longest path over an acyclic graph; members of a cycle share the layer of their cycle. */
function layers(nodes: string[], edges: Map<string, Set<string>>): { layer: Map<string, number>; cycles: string[][] } {
  // Tarjan's strongly connected components, then longest path on the condensed graph.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const component = new Map<string, number>();
  const components: string[][] = [];
  const connect = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const members: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.set(w, components.length);
        members.push(w);
      } while (w !== v);
      components.push(members);
    }
  };
  for (const v of nodes) if (!index.has(v)) connect(v);
  // Tarjan emits components callees first, so one pass in order settles every layer.
  const componentLayer: number[] = [];
  components.forEach((members, c) => {
    let below = 0;
    for (const v of members)
      for (const w of edges.get(v) ?? []) if (component.get(w) !== c) below = Math.max(below, componentLayer[component.get(w)!]);
    componentLayer[c] = below + 1;
  });
  const layer = new Map(nodes.map((v) => [v, componentLayer[component.get(v)!]]));
  return { layer, cycles: components.filter((m) => m.length > 1).map((m) => m.sort()) };
}

async function measure() {
  const sourceFiles = files.filter((f) => !f.endsWith('.json'));
  const partLines = new Map<string, number>();
  for (const m of fileSizes) partLines.set(partOf(m.where), (partLines.get(partOf(m.where)) ?? 0) + m.lines);
  const parts = [...partLines.keys()].filter((p) => !/\.[cm]?[jt]s$/.test(p));
  // Part → part, weighted by the file imports behind it.
  const weight = new Map<string, number>();
  for (const [from, targets] of imports)
    for (const to of targets)
      if (partOf(from) !== partOf(to)) weight.set(`${partOf(from)} ${partOf(to)}`, (weight.get(`${partOf(from)} ${partOf(to)}`) ?? 0) + 1);
  // Parts can import each other where files do not: the lightest part-to-part import inside a cycle is
  // taken as the one that points up a layer, until no cycle is left.
  const against = new Set<string>();
  const partEdges = () => {
    const edges = new Map<string, Set<string>>();
    for (const key of weight.keys()) {
      if (against.has(key)) continue;
      const [from, to] = key.split(' ');
      if (!edges.has(from)) edges.set(from, new Set());
      edges.get(from)!.add(to);
    }
    return edges;
  };
  const partCycles = layers(parts, partEdges()).cycles;
  for (;;) {
    const { cycles } = layers(parts, partEdges());
    if (cycles.length === 0) break;
    const inCycle = [...weight]
      .filter(([key]) => !against.has(key) && cycles.some((c) => key.split(' ').every((p) => c.includes(p))))
      .sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]));
    against.add(inCycle[0][0]);
  }
  const partGraph = layers(parts, partEdges());
  const fileGraph = layers(sourceFiles, imports);
  const layerOf = partGraph.layer;
  // An import that points up: into a part on the same layer or above (a part taken out of a cycle
  // may end up below the part it imports after all; then its import points down and is not listed).
  const upward = [...imports].flatMap(([from, targets]) =>
    [...targets]
      .filter((to) => partOf(from) !== partOf(to) && (layerOf.get(partOf(to)) ?? 0) >= (layerOf.get(partOf(from)) ?? 0))
      .map((to) => `${from} -> ${to}`),
  );
  const byLines = (a: Measured, b: Measured) => b.lines - a.lines;
  return {
    files: sourceFiles.length,
    lines: fileSizes.reduce((sum, m) => sum + m.lines, 0),
    parts: parts.length,
    layers: Math.max(...layerOf.values()),
    partsByLayer: Object.fromEntries(
      [...new Set(layerOf.values())]
        .sort((a, b) => b - a)
        .map((l) => [
          String(l),
          parts
            .filter((p) => layerOf.get(p) === l)
            .sort()
            .map((p) => `${p} (${partLines.get(p)} lines)`),
        ]),
    ),
    partCyclesBeforeLayering: partCycles,
    fileCycles: fileGraph.cycles,
    importsUpALayer: upward.sort(),
    longestFileImportChain: Math.max(...fileGraph.layer.values()),
    largestFiles: fileSizes.sort(byLines).slice(0, top),
    longestFunctions: functions.sort(byLines).slice(0, top),
    cli: await optionLines(),
    ...(follow ? { follow: followed(follow, layerOf) } : {}),
  };
}

/** The function's file, its length, and the files and parts that file reaches through its imports. */
function followed(name: string, layerOf: Map<string, number>) {
  const found = functions.filter((f) => f.where.endsWith(` ${name}`));
  return found.map((f) => {
    const file = f.where.slice(0, f.where.indexOf(':'));
    const reached = new Set<string>();
    const visit = (v: string) => {
      for (const w of imports.get(v) ?? [])
        if (!reached.has(w)) {
          reached.add(w);
          visit(w);
        }
    };
    visit(file);
    const reachedParts = [...new Set([...reached].map(partOf))].sort();
    return {
      function: f.where,
      lines: f.lines,
      directImports: imports.get(file)?.size ?? 0,
      filesReached: reached.size,
      partsReached: reachedParts.map((p) => `${p} (layer ${layerOf.get(p)})`),
    };
  });
}

/** Option lines per command, from the program the CLI builds (nothing is run; `--help`/`--version` are commander's). */
async function optionLines() {
  const programFile = join(process.cwd(), 'cli/program.ts');
  if (!existsSync(programFile)) return undefined;
  const { buildProgram } = (await import(pathToFileURL(programFile).href)) as { buildProgram: () => import('commander').Command };
  const program = buildProgram();
  const own = (c: import('commander').Command) =>
    c.options.filter((o) => o.long !== '--version' && o.long !== '--help').map((o) => o.long ?? o.short!);
  const perCommand: Record<string, number> = {};
  // The flags that say which stack a command works on (its place, endpoints and outputs).
  const stackFlags = new Set([
    '--aws',
    '--endpoint',
    '--sqs-endpoint',
    '--dynamodb-endpoint',
    '--table',
    '--queue-urls',
    '--intake-url',
    '--state-machine',
    '--backfill-state-machine',
    '--stack',
    '--region',
    '--profile',
  ]);
  let stackOptionLines = 0;
  const walk = (c: import('commander').Command, path: string) => {
    for (const sub of c.commands) {
      const name = path ? `${path} ${sub.name()}` : sub.name();
      if (sub.commands.length > 0) walk(sub, name);
      else {
        perCommand[name] = own(sub).length;
        stackOptionLines += own(sub).filter((o) => stackFlags.has(o)).length;
      }
    }
  };
  walk(program, '');
  return {
    programOptions: own(program),
    commands: Object.keys(perCommand).length,
    optionLines: Object.values(perCommand).reduce((a, b) => a + b, 0),
    stackOptionLines,
    perCommand,
  };
}
