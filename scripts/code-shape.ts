/**
 * The shape of the source (tests excluded): the largest files and the longest functions, in lines.
 * A review aid, not a gate: `npm run shape [-- --top N]`. Functions are every function-like node
 * (declarations, methods, arrows, constructors) measured from its first to its last line, so an
 * outer function's length includes the closures inside it — which is the point.
 */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import ts from 'typescript';

// `npm run shape | head` closes stdout early: that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const top = Number(process.argv[process.argv.indexOf('--top') + 1]) || 5;
const files = execFileSync('git', ['ls-files', '*.ts', '*.mjs', '*.cjs'], { encoding: 'utf8' })
  .split('\n')
  .filter((f) => f && !f.startsWith('test/') && !f.endsWith('.d.ts'));

interface Measured {
  where: string;
  lines: number;
}
const fileSizes: Measured[] = [];
const functions: Measured[] = [];

for (const file of files) {
  const text = readFileSync(file, 'utf8');
  fileSizes.push({ where: file, lines: text.split('\n').length - (text.endsWith('\n') ? 1 : 0) });
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const visit = (node: ts.Node, owner: string) => {
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
show(`largest files (lines) of ${files.length}`, fileSizes);
show('longest functions (lines, closures included)', functions);
