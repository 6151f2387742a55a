// The incident dashboard (examples/incidents) in real browsers, on two real nodes: each node its
// own process on the shared Redis, the page on the browser bundle built from src/. Alice (an
// admin) opens node 1; Bob (payments) reaches node 2 through a small TCP balancer that falls back
// to node 1, and that the test can cut, as a network that drops would. Debian's chromium driven by
// playwright-core; skipped (with the reason) when it is not installed.
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import type { Locator, Page, Request } from 'playwright-core'
import t from 'tap'
import { launch, noBrowser, screenshots } from './browser-helper.js'
import { balancer, clusterPrefix, startNode, type NodeProcess } from './cluster-helper.js'
import { buildBrowserBundle } from './client-helper.js'

const INCIDENTS_NODE = fileURLToPath(new URL('./fixtures/incidents-node.ts', import.meta.url))

// two node processes, a browser bundle and two browsers on a shared 2-core machine
t.setTimeout(300_000)

/** A real HTTP call as `user`, as the page makes it. */
async function call (node: NodeProcess, user: string, method: string, path: string, body?: unknown): Promise<any> {
  const { token } = await (await fetch(`${node.url}/api/demo-token?user=${user}`)).json() as { token: string }
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`${node.url}${path}`, { method, headers, body: body === undefined ? null : JSON.stringify(body) })
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`)
  return await res.json()
}

t.test('alice and bob on two nodes: each other\'s actions and presence, offline catch-up, a node killed', { skip: noBrowser }, async (t) => {
  const env = { KEY_PREFIX: clusterPrefix(t), CLIENT_SCRIPT: await buildBrowserBundle(t) }
  const [node1, node2] = await Promise.all([startNode(t, env, INCIDENTS_NODE), startNode(t, env, INCIDENTS_NODE)]) as [NodeProcess, NodeProcess]
  const lb = await balancer(t, [node2.port, node1.port])

  const browser = await launch(t)
  const aliceContext = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  // bob on a phone-sized screen: the page must work at 390 px
  const bobContext = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true })
  const shots = await screenshots(t, aliceContext, bobContext)
  const errors: string[] = []
  async function open (context: typeof aliceContext, url: string, user: string): Promise<Page> {
    const page = await context.newPage()
    page.on('pageerror', (err) => errors.push(`${user}: ${err.message}`))
    await page.goto(`${url}/?user=${user}`)
    await page.locator('#conn[data-state="connected"]').waitFor()
    return page
  }
  const alice = await open(aliceContext, node1.url, 'alice')
  const bob = await open(bobContext, lb.url, 'bob')
  t.same([(await node1.get('/health/realtime')).body.node.connections, (await node2.get('/health/realtime')).body.node.connections], [1, 1],
    'alice is on node 1, bob on node 2')
  t.equal(await bob.evaluate(() => document.documentElement.scrollWidth), 390, 'nothing wider than the phone')
  t.equal(await alice.getByTestId('team-search').count(), 1, 'the admin sees every team')
  t.equal(await bob.getByTestId('team-search').count(), 0, 'bob only his own')

  // presence, across the nodes
  const viewer = (page: Page, team: string, user: string): Locator => page.getByTestId(`team-${team}`).getByTestId('viewers').locator(`[data-user-id="${user}"]`)
  await viewer(bob, 'payments', 'alice').waitFor()
  await viewer(alice, 'payments', 'bob').waitFor()
  t.match(await bob.getByTestId('team-payments').getByTestId('viewers').textContent(), 'Alice is here too')
  t.equal(await viewer(alice, 'search', 'bob').count(), 0, 'bob is not looking at search')

  // each other's actions
  const incident = (page: Page, title: string): Locator => page.getByTestId('incident').filter({ hasText: title })
  const payments = alice.getByTestId('team-payments')
  await payments.getByTestId('new-title').fill('Card payments failing')
  await payments.getByTestId('new-severity').selectOption('sev1')
  await payments.getByTestId('declare-button').click()
  await incident(bob, 'Card payments failing').waitFor()
  t.equal(await incident(bob, 'Card payments failing').getByTestId('severity').textContent(), 'SEV1')

  await incident(bob, 'Card payments failing').getByTestId('acknowledge').click()
  await incident(alice, 'Card payments failing').locator('[data-testid="status"][data-status="acknowledged"]').waitFor()
  t.match(await incident(alice, 'Card payments failing').getByTestId('meta').textContent(), 'acknowledged by Bob')

  await incident(alice, 'Card payments failing').getByTestId('note-text').fill('Rolled back the deploy')
  await incident(alice, 'Card payments failing').getByTestId('add-note').click()
  await incident(bob, 'Card payments failing').getByTestId('notes').filter({ hasText: 'Alice: Rolled back the deploy' }).waitFor()

  await incident(bob, 'Card payments failing').getByTestId('edit').click()
  await incident(bob, 'Card payments failing').getByTestId('edit-title').fill('Card payments failing in the EU')
  await incident(bob, 'Card payments failing').getByTestId('save').click()
  await incident(alice, 'Card payments failing in the EU').waitFor()
  t.match(await alice.getByTestId('activity').textContent(), 'Bob edited “Card payments failing in the EU”', 'incident:updated')

  // bob's tab goes offline: alice acts; bob comes back and catches up by replay
  const loads: Request[] = []
  bob.on('request', (request) => { if (new URL(request.url()).pathname === '/api/incidents') loads.push(request) })
  lb.hold()
  await bobContext.setOffline(true)
  lb.cut()
  await bob.locator('#conn[data-state="reconnecting"]').waitFor()
  t.equal(await bob.getByTestId('banner').getAttribute('data-kind'), 'offline', 'the banner says so')
  await incident(alice, 'Card payments failing in the EU').getByTestId('resolve').click()
  await payments.getByTestId('new-title').fill('Refunds delayed')
  await payments.getByTestId('declare-button').click()
  await incident(alice, 'Refunds delayed').waitFor()
  await bobContext.setOffline(false)
  lb.release()
  await bob.locator('#conn[data-state="connected"]').waitFor()
  await incident(bob, 'Refunds delayed').waitFor()
  await incident(bob, 'Card payments failing in the EU').locator('[data-testid="status"][data-status="resolved"]').waitFor()
  t.equal(await bob.getByTestId('activity').locator('li[data-replayed="true"]').count(), 2, 'both missed changes, replayed')
  t.equal(await bob.getByTestId('banner').isHidden(), true, 'and nothing wrong any more')
  t.same(loads, [], 'caught up without loading the incidents again')
  t.equal((await node2.get('/health/realtime')).body.node.connections, 1, 'back on node 2')

  // node 2 dies: bob's page reconnects through the balancer to node 1 and misses nothing
  lb.hold()
  await node2.stop('SIGKILL')
  await bob.locator('#conn[data-state="reconnecting"]').waitFor()
  await incident(alice, 'Refunds delayed').getByTestId('note-text').fill('Queue drained')
  await incident(alice, 'Refunds delayed').getByTestId('add-note').click()
  await incident(alice, 'Refunds delayed').getByTestId('notes').filter({ hasText: 'Queue drained' }).waitFor()
  await incident(alice, 'Card payments failing in the EU').getByTestId('reassign').selectOption('search')
  await alice.getByTestId('team-search').getByTestId('incident').filter({ hasText: 'Card payments failing in the EU' }).waitFor()
  lb.release()
  await bob.locator('#conn[data-state="connected"]').waitFor()
  await incident(bob, 'Refunds delayed').getByTestId('notes').filter({ hasText: 'Alice: Queue drained' }).waitFor()
  await bob.getByTestId('activity').filter({ hasText: 'Alice moved “Card payments failing in the EU” from Payments to Search' }).waitFor()
  t.equal(await incident(bob, 'Card payments failing in the EU').count(), 0, 'the incident left bob\'s team')
  t.equal((await node1.get('/health/realtime')).body.node.connections, 2, 'bob is on node 1 now')
  t.same(loads, [], 'again by replay, from the shared log')
  await viewer(alice, 'payments', 'bob').waitFor()

  // more missed than the log keeps: a banner with a reload action
  lb.hold()
  await bobContext.setOffline(true)
  lb.cut()
  await bob.locator('#conn[data-state="reconnecting"]').waitFor()
  const refunds = (await call(node1, 'alice', 'GET', '/api/incidents')).incidents.find((i: { title: string }) => i.title === 'Refunds delayed')
  for (let n = 1; n <= 55; n++) await call(node1, 'alice', 'POST', `/api/incidents/${refunds.id}/notes`, { text: `Update ${n}` })
  await bobContext.setOffline(false)
  lb.release()
  await bob.locator('[data-testid="banner"][data-kind="resync"]').waitFor()
  t.equal(await bob.getByTestId('banner-action').textContent(), 'Reload')
  await bob.getByTestId('banner-action').click()
  await bob.getByTestId('banner').waitFor({ state: 'hidden' })
  await incident(bob, 'Refunds delayed').getByTestId('notes').filter({ hasText: 'Update 55' }).waitFor()
  t.equal(await incident(bob, 'Refunds delayed').getByTestId('notes').getAttribute('data-count'), '56', 'every note, after the reload')
  await incident(bob, 'Refunds delayed').getByTestId('all-notes').click()
  t.equal(await incident(bob, 'Refunds delayed').getByTestId('notes').locator('li').count(), 56, 'all shown on asking')
  t.equal(loads.length, 1, 'one load of the incidents, from the reload')

  await alice.screenshot({ path: join(shots, 'incidents-alice.png'), fullPage: true })
  await bob.screenshot({ path: join(shots, 'incidents-bob.png'), fullPage: true })
  t.same(errors, [], 'no page errors')
})
