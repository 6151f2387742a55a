// The task board example in a real browser, through the browser bundle of fastify-realtime/client
// (built from src/ with the package's build options): two tabs stay in step, and a tab reloaded
// after missing a change catches up from its stored position instead of reloading the board.
// Debian's chromium driven by playwright-core; skipped (with the reason) when it is not installed.
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { BrowserContext, Page } from 'playwright-core'
import t, { type Test } from 'tap'
import { launch, noBrowser, screenshots } from './browser-helper.js'
import { importExample } from './helper.js'
import { buildBrowserBundle } from './client-helper.js'

type TasksExample = typeof import('../examples/tasks/app.js')

/** The task board example listening on port 0, and a browser context of the given size; all closed at teardown. */
async function board (t: Test, viewport: { width: number, height: number }): Promise<{ url: string, context: BrowserContext, shots: string }> {
  const { buildTasksApp } = await importExample<TasksExample>('examples/tasks/app.ts')
  const app = await buildTasksApp({ clientScript: await buildBrowserBundle(t) })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const browser = await launch(t)
  const context = await browser.newContext({ viewport })
  return { url, context, shots: await screenshots(t, context) }
}

t.test('two tabs of the task board stay in step', { skip: noBrowser }, async (t) => {
  const { url, context, shots } = await board(t, { width: 1100, height: 720 })
  const errors: string[] = []
  async function open (user: string): Promise<Page> {
    const page = await context.newPage()
    page.on('pageerror', (err) => errors.push(`${user}: ${err.message}`))
    await page.goto(`${url}/?user=${user}`)
    // the page says connected once the server has sent realtime:ready (joined to its boards)
    await page.locator('#state[data-state="connected"]').waitFor()
    return page
  }
  const alice = await open('alice')
  const bob = await open('bob')
  t.equal(await alice.locator('#state').textContent(), 'connected')
  t.equal(await bob.locator('#state').textContent(), 'connected')
  t.equal(await alice.evaluate(() => typeof (window as any).FastifyRealtime?.connect), 'function', 'the page runs the bundled client')
  t.equal(await alice.evaluate(() => typeof (window as any).io), 'undefined', 'and no raw socket.io-client')

  const title = `Browser task ${Date.now()}`
  const inColumn = (page: Page, status: string) =>
    page.getByTestId(`column-${status}`).getByTestId('task').filter({ hasText: title })

  await alice.getByTestId('new-title').fill(title)
  await alice.getByTestId('add').click()
  await inColumn(bob, 'todo').waitFor()
  t.equal(await inColumn(bob, 'todo').count(), 1, "the task appears in bob's tab without a reload")
  t.equal(await inColumn(alice, 'todo').count(), 1, "alice's tab shows it once (no echo duplicate)")
  t.equal(await alice.getByTestId('new-title').inputValue(), '', 'the input is cleared')

  await inColumn(alice, 'todo').getByTestId('move-right').click()
  await inColumn(bob, 'doing').waitFor()
  t.equal(await inColumn(bob, 'todo').count(), 0, 'it left the first column in bob\'s tab')
  t.equal(await inColumn(bob, 'doing').count(), 1, "bob's tab shows it in the new column")
  t.equal(await inColumn(alice, 'doing').count(), 1, "alice's tab moved it too")
  t.match(await bob.getByTestId('activity').textContent(), `alice moved “${title}” to Doing`)

  // and back the other way: bob moves it on, alice sees it
  await inColumn(bob, 'doing').getByTestId('move-right').click()
  await inColumn(alice, 'done').waitFor()
  t.equal(await inColumn(alice, 'doing').count(), 0)
  const aliceLog = await alice.getByTestId('activity').textContent()
  t.match(aliceLog, `bob moved “${title}” to Done`)
  t.notMatch(aliceLog, /alice (added|moved)/, "alice's own changes were skipped for her tab, not replayed to it")

  // bob's tab goes away; alice adds a task meanwhile; bob's tab comes back (a reload)
  await inColumn(bob, 'done').waitFor()
  const boardLoads: string[] = []
  bob.on('request', (request) => {
    if (request.method() === 'GET' && new URL(request.url()).pathname === '/api/boards/demo/tasks') boardLoads.push(request.url())
  })
  await bob.goto('about:blank')
  const missed = `Missed task ${Date.now()}`
  await alice.getByTestId('new-title').fill(missed)
  await alice.getByTestId('add').click()
  await alice.getByTestId('column-todo').getByTestId('task').filter({ hasText: missed }).waitFor()
  await bob.goto(`${url}/?user=bob`)
  await bob.locator('#state[data-state="connected"]').waitFor()
  const caughtUp = bob.getByTestId('column-todo').getByTestId('task').filter({ hasText: missed })
  await caughtUp.waitFor()
  t.equal(await caughtUp.count(), 1, 'the task added while bob was away is there after the reload')
  t.equal(await inColumn(bob, 'done').count(), 1, 'and the board he had before, from his tab\'s own storage')
  t.match(await bob.getByTestId('activity').textContent(), `alice added “${missed}” (while you were away)`, 'replayed from the stored position')
  t.same(boardLoads, [], 'the reloaded tab caught up by replay, without loading the board again')

  await bob.screenshot({ path: join(shots, 'tasks-demo.png'), fullPage: true })
  t.equal(await alice.getByTestId('error').textContent(), '', 'no error shown')
  t.equal(await bob.getByTestId('error').textContent(), '', 'no error shown')
  t.same(errors, [], 'no page errors')
})

t.test('on a phone the board stacks and fits; a non-member sees one clear state; nothing on the page fails to load', { skip: noBrowser }, async (t) => {
  const { url, context, shots } = await board(t, { width: 390, height: 844 })
  const failed: string[] = []
  context.on('response', (response) => {
    // a non-member's board is a 404 by design; anything else missing (a favicon, say) is a fault
    if (response.status() >= 400 && new URL(response.url()).pathname !== '/api/boards/demo/tasks') failed.push(`${response.status()} ${response.url()}`)
  })
  const alice = await context.newPage()
  await alice.goto(`${url}/?user=alice`)
  await alice.locator('#state[data-state="connected"]').waitFor()
  await alice.getByTestId('task').first().waitFor()
  t.ok(await alice.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scrolling at 390 px')
  const columns = await Promise.all(['todo', 'doing', 'done'].map(async (status) => await alice.getByTestId(`column-${status}`).boundingBox()))
  t.ok(columns.every((box) => box !== null && box.width > 300), 'each column takes the width of the screen')
  t.ok(columns[0]!.y < columns[1]!.y && columns[1]!.y < columns[2]!.y, 'one column after another')
  for (const task of await alice.getByTestId('task').all()) {
    const card = (await task.boundingBox())!
    const title = (await task.getByTestId('task-title').boundingBox())!
    t.ok(title.height < 3 * 22, `a title wraps at most to a couple of lines (${Math.round(title.height)} px)`)
    for (const button of await task.getByRole('button').all()) {
      const box = (await button.boundingBox())!
      t.ok(box.x >= card.x && box.x + box.width <= card.x + card.width + 0.5, 'its buttons stay inside the card')
    }
  }
  t.ok(await alice.evaluate(() => document.querySelector('link[rel="icon"]') !== null), 'the page has an icon')
  await alice.screenshot({ path: join(shots, 'tasks-phone.png'), fullPage: true })

  const carol = await context.newPage()
  await carol.goto(`${url}/?user=carol`)
  await carol.locator('#state[data-state="no access"]').waitFor()
  t.equal(await carol.locator('#state').textContent(), 'no access', 'one state: no access, not "connected"')
  t.match(await carol.getByTestId('error').textContent(), 'not a member')
  t.equal(await carol.getByTestId('column-todo').isVisible(), false, 'no empty board shown')
  t.same(failed, [], 'no request failed')
})
