"""``GET /``: a page to try the service, with nothing fetched from elsewhere."""

PAGE_HTML = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rakuten-ray: classer un produit</title>
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:1.5em auto;padding:0 1em;
color:#1d2330}
h1{margin-bottom:.2em} .lede{color:#555;margin-top:0}
form{display:grid;gap:.7em;border:1px solid #dde;border-radius:10px;padding:1em}
label{font-weight:600;font-size:.9em} input[type=text],textarea{width:100%;padding:.5em;
font:inherit;border:1px solid #ccd;border-radius:6px;box-sizing:border-box}
#drop{border:2px dashed #aab;border-radius:8px;padding:1em;text-align:center;color:#667;
cursor:pointer} #drop.over{background:#eef4ff} #preview{max-height:120px;display:none;
margin:.5em auto 0}
button{justify-self:start;background:#2e86de;color:#fff;border:0;border-radius:6px;
padding:.6em 1.4em;font:inherit;cursor:pointer} button:disabled{background:#99b}
#result{margin-top:1.2em;display:none}
.answer{font-size:1.5em;font-weight:600} .code{color:#777;font-size:.8em}
.row{display:grid;grid-template-columns:16em 1fr 4em;gap:.5em;align-items:center;
margin:.25em 0;font-size:.9em} .bar{height:14px;background:#2e86de;border-radius:7px}
.side{display:flex;gap:1em;margin-top:1em} .side div{flex:1;border:1px solid #eee;
border-radius:8px;padding:.6em} .error{color:#c0392b}
.decision{display:inline-block;padding:.1em .6em;border-radius:1em;font-size:.8em}
.auto{background:#dff3e4;color:#1e7b34} .review{background:#fdebd2;color:#8a5300}
</style></head>
<body>
<h1>Classer un produit</h1>
<p class="lede">Title, description and a picture in: the model's product type code out,
with its calibrated probability, the five most likely codes, and what text and image say
on their own.</p>
<form id="form">
  <div><label for="designation">Titre (designation)</label>
  <input type="text" id="designation" required placeholder="Chaise de jardin en teck"></div>
  <div><label for="description">Description</label>
  <textarea id="description" rows="3"></textarea></div>
  <div><label>Image</label><div id="drop">Drop a JPEG, PNG or WebP here, or click to choose
  <input type="file" id="file" accept="image/*" hidden><img id="preview" alt=""></div></div>
  <button type="submit" id="submit">Classify</button>
</form>
<div id="result">
  <div class="answer"><span id="category"></span> <span class="code" id="code"></span></div>
  <div><span id="confidence"></span> <span id="decision" class="decision"></span></div>
  <h3>Top 5</h3><div id="top"></div>
  <div class="side"><div><b>Text alone</b><br><span id="text"></span></div>
  <div><b>Image alone</b><br><span id="image"></span></div></div>
  <p class="code">bundle <span id="bundle"></span></p>
</div>
<p id="error" class="error"></p>
<script>
let imageData = null;
const drop = document.getElementById('drop'), file = document.getElementById('file');
function readFile(f) {
  const reader = new FileReader();
  reader.onload = () => {
    imageData = reader.result.split(',')[1];
    const preview = document.getElementById('preview');
    preview.src = reader.result; preview.style.display = 'block';
  };
  reader.readAsDataURL(f);
}
drop.onclick = () => file.click();
file.onchange = () => { if (file.files[0]) readFile(file.files[0]); };
drop.ondragover = e => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = e => { e.preventDefault(); drop.classList.remove('over');
  if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]); };
function text(id, value) { document.getElementById(id).textContent = value; }
document.getElementById('form').onsubmit = async e => {
  e.preventDefault();
  const button = document.getElementById('submit');
  button.disabled = true; text('error', '');
  try {
    const response = await fetch('predict?k=5', {method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({designation: document.getElementById('designation').value,
        description: document.getElementById('description').value, image: imageData})});
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    text('category', body.category); text('code', body.prdtypecode);
    text('confidence', 'probability ' + body.confidence.toFixed(3));
    const decision = document.getElementById('decision');
    decision.textContent = body.decision === 'auto' ? 'accepted automatically'
      : 'to review (' + body.review_reason + ')';
    decision.className = 'decision ' + body.decision;
    const top = document.getElementById('top'); top.innerHTML = '';
    for (const item of body.top) {
      const row = document.createElement('div'); row.className = 'row';
      const name = document.createElement('span');
      name.textContent = item.category + ' (' + item.prdtypecode + ')';
      const bar = document.createElement('div'); bar.className = 'bar';
      bar.style.width = Math.max(1, 100 * item.probability) + '%';
      const value = document.createElement('span'); value.textContent = item.probability.toFixed(3);
      row.append(name, bar, value); top.append(row);
    }
    text('text', body.text_category + ' (' + body.text_prdtypecode + ')');
    text('image', body.image_prdtypecode === null ? 'no usable image (' + body.image_status + ')'
      : body.image_category + ' (' + body.image_prdtypecode + ')');
    text('bundle', body.bundle_id);
    document.getElementById('result').style.display = 'block';
  } catch (err) { text('error', String(err.message || err)); }
  button.disabled = false;
};
</script>
</body></html>
"""
