import sys,json
for l in sys.stdin:
  try: r=json.loads(l)
  except Exception: print(l,end=''); continue
  m=dict(r['merge']); 
  print(json.dumps(m), r.get('se_layers'), r.get('om_layers'),'|',r['harmful_plain'],r['harmful_jailbreak'],r['over_refusal'],r['utility'],r['other'],r['benign_refusal'], r.get('oth',''), flush=True)
