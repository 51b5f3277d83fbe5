// The account, admin and teacher flows of cubby's web UI in Debian's
// chromium (playwright-core): CSV import, templates, a class's template and
// roster, the whole class started and stopped from the roster, a student's
// password change and sign-out (the old cookie is dead on the server too),
// and the terminal's paste, Ctrl-C and resize. Run by
// crates/cubby/tests/caas_web.rs against a live `cubby serve` with users
// teach (teacher), ann (student, in the class) and root (admin).
// Env: CUBBY_URL, CUBBY_CLASS, CUBBY_IMAGE.
import { base, fail, flashSays, launch, shot as shotOf, signIn, T, termSees } from './lib.mjs';

const classId = process.env.CUBBY_CLASS;
const image = process.env.CUBBY_IMAGE;
const shot = (page, name) => shotOf(page, name, true);
const browser = await launch();

// What a `stty size` printed last, as "ROWS COLS", read off the screen
// after a marker the command echoes.
async function sttySize(page, tag) {
  await page.keyboard.type(`echo ${tag}-$(stty size | tr ' ' x)-end\n`);
  const re = new RegExp(`${tag}-(\\d+)x(\\d+)-end`);
  await page.waitForFunction((r) => {
    const rows = document.querySelector('.xterm-rows');
    return rows && new RegExp(r).test(rows.textContent);
  }, re.source, { timeout: T });
  const text = await page.locator('.xterm-rows').textContent();
  const m = text.match(re);
  return `${m[1]} ${m[2]}`;
}

try {
  // The admin imports users from CSV; a bad line is explained and names
  // its line, and nothing of that import is created.
  const adminCtx = await browser.newContext();
  const admin = await signIn(adminCtx, 'root', 'root-pass-123');
  await admin.goto(base + '/#/users');
  await admin.fill('#u-csv', 'username,role,password\ncarl,student,carl-pass-123\nnobody,wizard,nobody-pass-123\n');
  await admin.getByRole('button', { name: 'Import' }).click();
  await flashSays(admin, 'line 3');
  await admin.fill('#u-csv', 'username,role,password\ncarl,student,carl-pass-123\ndora,teacher,dora-pass-123\nfinn,student,finn-pass-123\n');
  await admin.getByRole('button', { name: 'Import' }).click();
  await flashSays(admin, '3 users created');
  await admin.locator('td:text-is("carl")').waitFor();
  await admin.locator('td:text-is("dora")').waitFor();
  if (await admin.locator('td:text-is("nobody")').count()) fail('a refused import created a user');
  await shot(admin, 'ui-admin-users');
  // The admin sets ann's password; her old one stops working.
  await admin.locator('#p-user option:text-is("ann")').waitFor({ state: 'attached' });
  await admin.selectOption('#p-user', { label: 'ann' });
  await admin.fill('#p-pw', 'ann-reset-789');
  await admin.getByRole('button', { name: 'Set password' }).click();
  await flashSays(admin, 'Password of ann set');
  const probe = await browser.newContext();  // its own cookie jar
  const annOld = await probe.request.post(base + '/api/auth/login', { data: { username: 'ann', password: 'ann-pass-123' } });
  const annNew = await probe.request.post(base + '/api/auth/login', { data: { username: 'ann', password: 'ann-reset-789' } });
  await probe.close();
  if (annOld.status() !== 401 || annNew.status() !== 200) fail(`ann's password reset: old ${annOld.status()}, new ${annNew.status()}`);

  // The admin makes a template in the UI: bad JSON is explained, good JSON
  // is saved and listed.
  await admin.goto(base + '/#/templates');
  await admin.fill('#t-name', 'ui-made');
  await admin.fill('#t-spec', '{ "image": ');
  await admin.getByRole('button', { name: 'Save template' }).click();
  await flashSays(admin, 'not valid JSON');
  await admin.fill('#t-spec', JSON.stringify({ image, port: 8080, memory_bytes: 48 << 20, cpus: 0.5, pids: 64 }));
  await admin.getByRole('button', { name: 'Save template' }).click();
  await flashSays(admin, 'Template saved');
  await admin.locator('section h2:text-is("ui-made")').waitFor();

  // The teacher gives the class that template and adds carl to the roster.
  const teachCtx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const teacher = await signIn(teachCtx, 'teach', 'teach-pass-123');
  await teacher.goto(base + '/#/class/' + classId);
  await teacher.locator('#tpl option:text-is("ui-made")').waitFor({ state: 'attached' });
  await teacher.selectOption('#tpl', { label: 'ui-made' });
  await teacher.getByRole('button', { name: 'Use this template' }).click();
  await teacher.fill('#add-student', 'carl');
  await teacher.getByRole('button', { name: 'Add', exact: true }).click();
  const carlRow = teacher.locator('tr[data-student="carl"]');
  const annRow = teacher.locator('tr[data-student="ann"]');
  await carlRow.locator('[data-state="not started"]').waitFor();
  const cls = await (await teacher.request.get(base + `/api/classes/${classId}`)).json();
  const tpls = await (await teacher.request.get(base + '/api/templates')).json();
  const made = tpls.find((t) => t.name === 'ui-made');
  if (!made || cls.template_id !== made.id) fail(`the class's template is not ui-made: ${JSON.stringify(cls)}`);

  // The whole class starts from the roster and every row follows, then the
  // whole class stops.
  await teacher.getByRole('button', { name: 'Start whole class' }).click();
  await annRow.locator('[data-state="ready"]').waitFor();
  await carlRow.locator('[data-state="ready"]').waitFor();
  // The sandbox has the template's memory limit (48 MiB), seen inside it.
  const sessions = await (await teacher.request.get(base + '/api/sessions?active=true')).json();
  if (sessions.filter((s) => s.class_id === classId).length !== 2) fail(`whole class: ${JSON.stringify(sessions)}`);

  // carl, signed in, uses his terminal: a multi-line paste runs line by
  // line, Ctrl-C interrupts a running command, and a smaller window gives
  // the shell a smaller size.
  const carlCtx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const carl = await signIn(carlCtx, 'carl', 'carl-pass-123');
  const card = carl.locator(`section[data-class="${cls.code}"]`);
  await card.locator('[data-state="ready"]').waitFor();
  await card.getByRole('link', { name: 'Terminal' }).click();
  await carl.waitForSelector('#term-status:text-is("connected")');
  await termSees(carl, '$ ');
  await carl.click('.xterm');
  await carl.keyboard.type('cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max\n');
  await termSees(carl, String(48 << 20));
  await carl.evaluate(() => {
    const dt = new DataTransfer();
    dt.setData('text/plain', 'PASTED=one-$((2+2))\necho "$PASTED" pasted-two\n');
    document.querySelector('.xterm-helper-textarea')
      .dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  });
  await termSees(carl, 'one-4 pasted-two');
  await carl.keyboard.type('sleep 300; echo not-$((7*11))-interrupted\n');
  await carl.waitForTimeout(500);
  await carl.keyboard.press('Control+C');
  await carl.keyboard.type('echo after-ctrl-c-$((3*3))\n');
  await termSees(carl, 'after-ctrl-c-9');
  const big = await sttySize(carl, 'big');
  await carl.setViewportSize({ width: 560, height: 420 });
  await carl.waitForTimeout(500);
  const small = await sttySize(carl, 'small');
  const [br, bc] = big.split(' ').map(Number);
  const [sr, sc] = small.split(' ').map(Number);
  if (!(sr < br && sc < bc)) fail(`the shell's size did not follow the window: ${big} then ${small}`);
  const rows = await carl.locator('.xterm-rows').textContent();
  if (rows.includes('not-77-interrupted')) fail('Ctrl-C did not interrupt the command');
  await carl.keyboard.type('echo carl-notes-$((6*7)) > notes.txt; echo saved-$((2*4))\n');
  await termSees(carl, 'saved-8');

  // The teacher stops the whole class; every row follows.
  await teacher.getByRole('button', { name: 'Stop whole class' }).click();
  await annRow.locator('[data-state="stopped"]').waitFor();
  await carlRow.locator('[data-state="stopped"]').waitFor();

  // The teacher browses carl's saved work: the file he wrote, its content,
  // and picks that archive for his next session.
  await carlRow.getByRole('link', { name: 'All saved work' }).click();
  const saved = teacher.locator('section[data-archive]').first();
  await saved.getByRole('button', { name: 'Files' }).click();
  const note = teacher.locator('li[data-path="workspace/notes.txt"] a');
  await note.waitFor();
  const noteBody = await (await teacher.request.get(base + await note.getAttribute('href'))).text();
  if (noteBody.trim() !== 'carl-notes-42') fail(`carl's saved notes.txt: ${JSON.stringify(noteBody)}`);
  await saved.getByRole('button', { name: 'Restore this next time' }).click();
  await flashSays(teacher, 'The next session starts from');
  await teacher.waitForSelector('h1:text-is("Saved work of carl")');
  await shot(teacher, 'ui-saved-work');
  // carl sees his own saved work; ann, at the same address, sees none of it.
  await carl.goto(base + '/#/');
  await card.getByRole('link', { name: 'All my saved work' }).click();
  await carl.locator('section[data-archive]').first().waitFor();
  const annCtx = await browser.newContext();
  const ann = await signIn(annCtx, 'ann', 'ann-reset-789');
  await ann.goto(teacher.url());
  await ann.waitForSelector('text=Nothing saved yet');
  if (await ann.locator('section[data-archive]').count()) fail('ann sees carl\'s saved work');
  await annCtx.close();
  await teacher.goto(base + '/#/class/' + classId);

  // The teacher enrols from CSV (an existing student and a new account),
  // and sets an exam window; the class page shows it and each student's
  // collection status.
  await teacher.fill('#roster-csv', 'username,password\nerin,erin-pass-123\nann\n');
  await teacher.getByRole('button', { name: 'Enrol' }).click();
  await flashSays(teacher, '1 enrolled, 1 new accounts');
  await teacher.locator('tr[data-student="erin"]').waitFor();
  await teacher.locator('[data-exam="none"]').waitFor();
  const local = (t) => {
    const d = new Date(t);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  };
  await teacher.fill('#exam-from', local(Date.now() + 3_600_000));
  await teacher.fill('#exam-to', local(Date.now() + 2 * 3_600_000));
  await teacher.getByRole('button', { name: 'Set exam window' }).click();
  await flashSays(teacher, 'Exam window set');
  await teacher.locator('[data-exam="set"]').waitFor();
  await teacher.locator('li[data-collected="erin"]').waitFor();
  const early = await (await teacher.request.get(base + `/api/classes/${classId}/exam`)).json();
  // Work saved before the exam is not its collection.
  if (early.students.length !== 3 || early.students.some((c) => c.status !== 'no_session')) fail(`exam status: ${JSON.stringify(early)}`);
  await shot(teacher, 'ui-class-settings');

  // A template belongs to its maker: the teacher cannot change the admin's
  // (said in words); the admin can, and the change is what the API serves.
  await teacher.goto(base + '/#/templates');
  const uiMade = teacher.locator('textarea[data-template="ui-made"]');
  await uiMade.waitFor();
  await uiMade.fill(JSON.stringify({ image, port: 8080, memory_bytes: 40 << 20, cpus: 0.5, pids: 64 }));
  await teacher.getByRole('button', { name: 'Save ui-made' }).click();
  await flashSays(teacher, 'not yours');
  await admin.goto(base + '/#/templates');
  const adminEdit = admin.locator('textarea[data-template="ui-made"]');
  await adminEdit.waitFor();
  await adminEdit.fill(JSON.stringify({ image, port: 8080, memory_bytes: 40 << 20, cpus: 0.5, pids: 64 }));
  await admin.getByRole('button', { name: 'Save ui-made' }).click();
  await flashSays(admin, 'Template ui-made changed');
  const after = await (await admin.request.get(base + `/api/templates/${made.id}`)).json();
  if (after.spec.memory_bytes !== 40 << 20) fail(`template edit not saved: ${JSON.stringify(after)}`);

  // finn is in no class; he joins by the code his teacher gives him.
  const finnCtx = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const finn = await signIn(finnCtx, 'finn', 'finn-pass-123');
  await finn.waitForSelector('text=You are not in any class yet');
  await finn.fill('#join-code', 'not-a-code');
  await finn.getByRole('button', { name: 'Join' }).click();
  await flashSays(finn, 'not');
  const joinCode = (await (await teacher.request.get(base + `/api/classes/${classId}`)).json()).join_code;
  await finn.fill('#join-code', joinCode);
  await finn.getByRole('button', { name: 'Join' }).click();
  await flashSays(finn, `You joined ${cls.name}`);
  const finnCard = finn.locator(`section[data-class="${cls.code}"]`);
  await finnCard.waitFor();
  // The exam has not begun: his start is refused, saying when it begins.
  await finnCard.getByRole('button', { name: 'Start' }).click();
  await flashSays(finn, 'it starts in');
  await shot(finn, 'ui-student-exam-not-yet');

  // carl changes his password: a wrong current one is refused in words;
  // afterwards the old password no longer signs in and the new one does.
  await carl.goto(base + '/#/password');
  await carl.fill('#old', 'not-my-password');
  await carl.fill('#new', 'carl-new-pass-456');
  await carl.getByRole('button', { name: 'Change password' }).click();
  await flashSays(carl, 'password');
  if (!(await carl.locator('#old').isVisible())) fail('a wrong current password changed it');
  await carl.fill('#old', 'carl-pass-123');
  await carl.fill('#new', 'carl-new-pass-456');
  await carl.getByRole('button', { name: 'Change password' }).click();
  await flashSays(carl, 'Password changed');
  await carl.waitForSelector('#username');
  const oldTry = await carl.request.post(base + '/api/auth/login', { data: { username: 'carl', password: 'carl-pass-123' } });
  if (oldTry.status() !== 401) fail(`the old password still signs in: ${oldTry.status()}`);
  await carlCtx.clearCookies();
  const carl2 = await signIn(carlCtx, 'carl', 'carl-new-pass-456');

  // Sign out: back at the sign-in form, and the cookies the browser had
  // are refused by the server afterwards (not only forgotten by the page).
  const kept = await carlCtx.cookies();
  if (!kept.length) fail('no login cookie after sign-in');
  await carl2.getByRole('button', { name: 'Sign out' }).click();
  await carl2.waitForSelector('#username');
  const replayCtx = await browser.newContext();
  await replayCtx.addCookies(kept);
  const replay = await replayCtx.request.get(base + '/api/auth/me');
  if (replay.status() !== 401) fail(`the signed-out cookies still work: ${replay.status()} ${await replay.text()}`);
  const refresh = await replayCtx.request.post(base + '/api/auth/refresh', { headers: { Origin: base } });
  if (refresh.ok()) fail('the signed-out refresh cookie got a new login');
  console.log('accounts browser test passed');
} finally {
  await browser.close();
}
