/**
 * Does the mini program compile? An offline stand-in for `miniprogram-ci`, which
 * needs an AppID's upload key and WeChat's servers even to build a preview.
 *
 * 1. app.json, project.config.json, sitemap.json and every page's .json are valid JSON;
 *    every page listed in app.json has its .js, .wxml, .wxss and .json.
 * 2. Every WXML file compiles with WeChat's own WXML compiler (wcc, shipped in
 *    miniprogram-compiler), and every WXSS file with its WXSS compiler (wcsc).
 * 3. Every page renders with miniprogram-simulate (run by login.test.js).
 * 4. Every .js file parses as ES2015 (what the base library runs without the
 *    devtools' "enhance" compilation: no async/await, object spread or `?.`), calls
 *    `require` only with relative paths to files inside the mini program, and uses
 *    no Node.js globals.
 * 5. Local images referenced by WXML exist.
 *
 * Prints one line per check; exits 1 on the first failure list.
 */
const fs = require('fs')
const path = require('path')
const acorn = require('acorn')
const walk = require('acorn-walk')
const compiler = require('miniprogram-compiler')

const ROOT = path.resolve(process.argv[2] || path.join(__dirname, '../../miniprogram'))
const problems = []
const done = []

function readJson(rel) {
  const file = path.join(ROOT, rel)
  if (!fs.existsSync(file)) {
    problems.push(`${rel}: missing`)
    return null
  }
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (e) {
    problems.push(`${rel}: invalid JSON (${e.message})`)
    return null
  }
}

function files(ext) {
  const out = []
  const visit = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue
      const full = path.join(dir, entry.name)
      if (entry.isDirectory()) visit(full)
      else if (entry.name.endsWith(ext)) out.push(path.relative(ROOT, full))
    }
  }
  visit(ROOT)
  return out.sort()
}

// 1. The project's JSON files and pages.
const app = readJson('app.json')
const project = readJson('project.config.json')
readJson(app && app.sitemapLocation ? app.sitemapLocation : 'sitemap.json')
if (project && !/^wx[0-9a-zA-Z]{16}$/.test(project.appid || '')) problems.push('project.config.json: appid is not an AppID')
const pages = (app && app.pages) || []
if (!pages.length) problems.push('app.json: no pages')
for (const page of pages) {
  for (const ext of ['.js', '.wxml', '.wxss', '.json']) {
    if (!fs.existsSync(path.join(ROOT, page + ext))) problems.push(`${page}${ext}: missing (listed in app.json)`)
  }
  const json = readJson(`${page}.json`)
  const js = fs.existsSync(path.join(ROOT, `${page}.js`)) ? fs.readFileSync(path.join(ROOT, `${page}.js`), 'utf8') : ''
  if (json && /\bComponent\(/.test(js) && !json.usingComponents) {
    problems.push(`${page}.json: a page built with Component() needs "usingComponents"`)
  }
}
for (const rel of files('.json')) if (rel !== 'package.json') readJson(rel)
done.push(`json: ${files('.json').length} files, ${pages.length} pages`)

// 2. WeChat's WXML and WXSS compilers (they exit non-zero on any syntax error; the
//    generated code needs a webview to run, which miniprogram-simulate provides in
//    login.test.js, where the pages are rendered from wcc's output).
try {
  const out = compiler.wxmlToJs(ROOT)
  for (const rel of files('.wxml')) {
    if (!out.includes(`./${rel}`) && !out.includes(`'${rel}'`)) problems.push(`${rel}: not in wcc's output`)
  }
  done.push(`wxml: ${files('.wxml').length} files compiled by wcc`)
} catch (e) {
  problems.push(`wxml: wcc failed: ${String(e.message || e).slice(0, 2000)}`)
}
try {
  const out = compiler.wxssToJs(ROOT)
  for (const rel of files('.wxss')) {
    if (!out.includes(`'${rel}'`) && !out.includes(`'./${rel}'`)) problems.push(`${rel}: not in wcsc's output`)
  }
  done.push(`wxss: ${files('.wxss').length} files compiled by wcsc`)
} catch (e) {
  problems.push(`wxss: wcsc failed: ${String(e.message || e).slice(0, 2000)}`)
}

// 4. JavaScript the base library runs.
const NODE_GLOBALS = ['process', 'Buffer', '__dirname', '__filename', 'global', 'window', 'document']
for (const rel of files('.js')) {
  const source = fs.readFileSync(path.join(ROOT, rel), 'utf8')
  let ast
  try {
    ast = acorn.parse(source, { ecmaVersion: 2015, sourceType: 'script', locations: true })
  } catch (e) {
    problems.push(`${rel}: not ES2015: ${e.message}`)
    continue
  }
  walk.full(ast, (node) => {
    if (node.type === 'CallExpression' && node.callee.type === 'Identifier' && node.callee.name === 'require') {
      const arg = node.arguments[0]
      if (!arg || arg.type !== 'Literal' || !/^\.\.?\//.test(arg.value)) {
        problems.push(`${rel}:${node.loc.start.line}: require() takes a relative path in a mini program`)
        return
      }
      const target = path.resolve(path.dirname(path.join(ROOT, rel)), arg.value)
      const candidates = [target, `${target}.js`, path.join(target, 'index.js')]
      if (!target.startsWith(ROOT + path.sep) || !candidates.some((f) => fs.existsSync(f) && fs.statSync(f).isFile())) {
        problems.push(`${rel}:${node.loc.start.line}: require('${arg.value}') is not a file of the mini program`)
      }
    }
    if (node.type === 'Identifier' && NODE_GLOBALS.includes(node.name)) {
      problems.push(`${rel}:${node.loc.start.line}: ${node.name} does not exist in a mini program`)
    }
  })
}
done.push(`js: ${files('.js').length} files parse as ES2015`)

// 5. Local images.
for (const rel of files('.wxml')) {
  const source = fs.readFileSync(path.join(ROOT, rel), 'utf8')
  for (const m of source.matchAll(/src="(\/[^"{}]+)"/g)) {
    if (!fs.existsSync(path.join(ROOT, m[1]))) problems.push(`${rel}: ${m[1]} does not exist`)
  }
}
const pageJs = files('.js').map((rel) => fs.readFileSync(path.join(ROOT, rel), 'utf8')).join('\n')
for (const m of pageJs.matchAll(/'(\/images\/[^']+)'/g)) {
  if (!fs.existsSync(path.join(ROOT, m[1]))) problems.push(`${m[1]} does not exist`)
}

for (const line of done) console.log(`ok   ${line}`)
if (problems.length) {
  for (const p of problems) console.log(`FAIL ${p}`)
  process.exit(1)
}
console.log(`ok   ${ROOT} compiles`)
