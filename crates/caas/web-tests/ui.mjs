// Drives cubby's web UI in Debian's chromium (playwright-core, no browser
// download). Run by crates/cubby/tests/caas_web.rs against a live
// `cubby serve` with users teach, ann, bob and class web101.
// Env: CUBBY_URL, CUBBY_CLASS; CAAS_WEB_SHOTS (a directory) for screenshots.
import { base, fail, launch, shot, signIn, T, termSees } from './lib.mjs';

const browser = await launch();

try {
  // A wrong password is explained in words.
  const anonCtx = await browser.newContext();
  const anon = await anonCtx.newPage();
  await anon.goto(base + '/');
  await anon.fill('#username', 'ann');
  await anon.fill('#password', 'not-her-password');
  await shot(anon, 'ui-login');
  await anon.click('button[type=submit]');
  await anon.waitForSelector('#flash:has-text("wrong user name or password")');

  // The teacher watches the roster.
  const teachCtx = await browser.newContext({ viewport: { width: 1100, height: 750 } });
  const teacher = await signIn(teachCtx, 'teach', 'teach-pass-123');
  await teacher.click('text=Browser 101 (web101)');
  const annRow = teacher.locator('tr[data-student="ann"]');
  await annRow.locator('[data-state="not started"]').waitFor();

  // The student, on a phone-width screen: sign in, start, wait for ready.
  const annCtx = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const ann = await signIn(annCtx, 'ann', 'ann-pass-123');
  const card = ann.locator('section[data-class="web101"]');
  await card.getByRole('button', { name: 'Start' }).click();
  await card.locator('[data-state="ready"]').waitFor();
  await shot(ann, 'ui-student-phone');
  const appHref = await card.getByRole('link', { name: 'Open app' }).getAttribute('href');
  const sid = appHref.split('/')[3];

  // The teacher's roster changed by itself, and shows what the sandbox uses
  // (memory at once, CPU from the second sample on).
  await annRow.locator('[data-state="ready"]').waitFor();
  await annRow.locator('td[data-memory]:not([data-memory=""])').waitFor();
  await annRow.locator('td[data-cpu$="%"]').waitFor();
  await shot(teacher, 'ui-teacher-roster');

  // The student's terminal: type, see the output. Its websocket goes
  // through a route the test can cut, like a network blip.
  const termSockets = [];
  await ann.routeWebSocket(/\/terminal/, (ws) => { ws.connectToServer(); termSockets.push(ws); });
  await card.getByRole('link', { name: 'Terminal' }).click();
  await ann.waitForSelector('#term-status:has-text("connected")');
  await termSees(ann, '$ ');  // the prompt: the shell is reading
  await ann.click('.xterm');
  await ann.keyboard.type('echo hello-$((6*7)) as $(id -u)\n');
  await termSees(ann, 'hello-42 as 1000');
  // A network blip: the connection drops; the page reconnects by itself to
  // the same shell (its variable is still set).
  await ann.keyboard.type('BLIP=kept-$((5*3))\n');
  await ann.waitForTimeout(300);
  await termSockets[0].close({ code: 4001, reason: 'network blip' });
  for (let i = 0; termSockets.length < 2; i++) {
    if (i > 200) fail('the terminal did not reconnect after the blip');
    await ann.waitForTimeout(100);
  }
  await ann.waitForSelector('#term-status:text-is("connected")');
  await ann.keyboard.type('echo "$BLIP"\n');
  await termSees(ann, 'kept-15');
  const rowsNow = await ann.locator('.xterm-rows').textContent();
  if (rowsNow.includes('a new one')) fail('the reconnect got a new shell');
  // A student's app is untrusted: this one's JavaScript tries to use the
  // visitor's sign-in on the service (the service's API by its own address,
  // and relative to the app's origin), then reports what it got.
  const evil = `<!doctype html><title>evil</title><pre id=o></pre><script>
(async () => {
  const out = [];
  for (const u of ['/api/auth/me', location.protocol + '//127.0.0.1:' + location.port + '/api/auth/me',
                   location.protocol + '//127.0.0.1:' + location.port + '/api/sessions']) {
    try { const r = await fetch(u, { credentials: 'include' }); out.push(u + ' ' + r.status + ' ' + (await r.text()).slice(0, 300)); }
    catch (e) { out.push(u + ' blocked: ' + e); }
  }
  document.getElementById('o').textContent = out.join('\\n');
  document.body.dataset.done = '1';
})();
</script>`;
  await ann.keyboard.type(`echo ${Buffer.from(evil).toString('base64')} | base64 -d > evil.html; echo written-$((1+1))\n`);
  await termSees(ann, 'written-2');
  await ann.setViewportSize({ width: 1000, height: 700 });
  await shot(ann, 'ui-terminal');

  // The proxied app.
  // Open app: /api/sessions/ID/open hands the login over to the app's own
  // origin (SESSION.localhost:PORT, serve runs with --domain localhost).
  const resp = await ann.goto(base + appHref);
  if (resp.status() !== 200) fail(`the app answered ${resp.status()}`);
  await ann.waitForSelector('text=Hello from your cubby sandbox');
  const appOrigin = new URL(ann.url()).origin;
  if (!appOrigin.startsWith(`http://${sid}.localhost:`)) fail(`the app is not on its own origin: ${ann.url()}`);
  // Never by path on the service's origin (no --path-routing).
  const byPath = await ann.goto(base + `/r/${sid}/`);
  if (byPath.status() !== 403) fail(`/r/ answered ${byPath.status()}`);
  await ann.waitForSelector('text=Apps are not opened by path here');

  // The teacher opens the student's terminal from the roster.
  await annRow.getByRole('link', { name: 'Terminal' }).click();
  await teacher.waitForSelector('#term-status:has-text("connected")');
  await termSees(teacher, '$ ');
  await teacher.click('.xterm');
  await teacher.keyboard.type('echo teacher-$((2*3)) in $(pwd)\n');
  await termSees(teacher, 'teacher-6 in /workspace');

  // The teacher opens the student's (malicious) app: it runs on its own
  // origin, so its script cannot use the teacher's sign-in on the service.
  const teacherApp = await teachCtx.newPage();
  teacherApp.setDefaultTimeout(T);
  const tr = await teacherApp.goto(base + `/api/sessions/${sid}/open`);
  if (tr.status() !== 200) fail(`the teacher's app answered ${tr.status()}`);
  await teacherApp.goto(new URL(teacherApp.url()).origin + '/evil.html');
  await teacherApp.waitForSelector('body[data-done="1"]');
  const got = await teacherApp.locator('#o').textContent();
  if (got.includes('"role"') || got.includes('teach') || got.includes('"state"')) fail(`the app used the teacher's sign-in:\n${got}`);
  if (!got.includes('blocked')) fail(`the service answered the app's script:\n${got}`);
  await teacherApp.close();

  // Another student (keyboard only) is refused the first one's URLs.
  const bobCtx = await browser.newContext();
  const bob = await signIn(bobCtx, 'bob', 'bob-pass-123', true);
  const r2 = await bob.goto(base + `/api/sessions/${sid}/open`);
  if (r2.status() !== 404) fail(`bob opened ann's app: ${r2.status()}`);
  const r2b = await bob.goto(appOrigin + '/');
  if (r2b.status() !== 401) fail(`bob opened ann's app host: ${r2b.status()}`);
  await bob.goto(base + '/#/terminal/' + sid);
  await bob.waitForSelector('#term-status:has-text("disconnected")');
  const rows = await bob.locator('.xterm-rows').textContent();
  if (rows.includes('$')) fail(`bob got a prompt in ann's terminal: ${rows}`);

  // The student stops the session; the roster follows.
  await ann.goto(base + '/#/');
  await card.getByRole('button', { name: 'Stop' }).click();
  await card.locator('[data-state="stopped"]').waitFor();
  await teacher.goto(base + '/#/class/' + process.env.CUBBY_CLASS);
  await annRow.locator('[data-state="stopped"]').waitFor();
  // (a fresh URL: the browser may keep the app's page in its cache)
  const r3 = await ann.goto(appOrigin + '/?after-stop');
  if (r3.status() !== 410) fail(`a stopped session's app answered ${r3.status()}`);
  await ann.waitForSelector('text=This session has ended');
  // Her work was saved at the stop: she downloads it from her classes page.
  await ann.goto(base + '/#/');
  const dl = card.getByRole('link', { name: 'Download my work' });
  await dl.waitFor();
  const got2 = await ann.request.get(base + await dl.getAttribute('href'));
  if (got2.status() !== 200 || (await got2.body()).length < 64) fail(`download of my work: ${got2.status()}`);
  // The teacher downloads it from the roster too.
  await annRow.getByRole('link', { name: 'Download' }).waitFor();
  // Her saved work: the page says what her next session starts from, and
  // follows the teacher's choice (read back from the API).
  await annRow.getByRole('link', { name: 'All saved work' }).click();
  const next = teacher.locator('#restore-choice');
  await teacher.locator('#restore-choice[data-restore="latest"]').waitFor();
  if (!(await next.textContent()).includes('the latest saved work')) fail(`restore choice: ${await next.textContent()}`);
  await teacher.locator('section[data-next="yes"]').waitFor();
  await teacher.getByRole('button', { name: 'Start empty next time' }).click();
  await teacher.locator('#restore-choice[data-restore="empty"]').waitFor();
  if (await teacher.locator('section[data-next="yes"]').count() !== 0) fail('an archive marked next after "start empty"');
  const saved = teacher.locator('section[data-archive]').first();
  await saved.getByRole('button', { name: 'Restore this next time' }).click();
  await teacher.locator('#restore-choice[data-restore="archive"]').waitFor();
  await teacher.locator(`section[data-next="yes"][data-archive="${await saved.getAttribute('data-archive')}"]`).waitFor();
  await shot(teacher, 'ui-teacher-saved-work');
  await teacher.goto(base + '/#/class/' + process.env.CUBBY_CLASS);
  // "Download whole class" shows exactly when the API serves it.
  const doc = await (await teacher.request.get(base + '/api/openapi.json')).json();
  const whole = teacher.getByRole('link', { name: 'Download whole class' });
  if (doc.paths['/api/classes/{id}/archives.zip']) await whole.waitFor();
  else if (await whole.isVisible()) fail('a whole-class download link to nothing');

  // The admin's health page: database, engine, sandboxes.
  const adminCtx = await browser.newContext();
  const admin = await signIn(adminCtx, 'root', 'root-pass-123');
  await admin.goto(base + '/#/health');
  for (const what of ['Database', 'Engine', 'Sandboxes the engine runs']) {
    await admin.locator(`dt:text-is("${what}") + dd[data-ok="yes"]`).waitFor();
  }
  await shot(admin, 'ui-admin-health');
  console.log('browser test passed');
} finally {
  await browser.close();
}
