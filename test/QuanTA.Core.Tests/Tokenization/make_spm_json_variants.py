"""Hand-built SentencePiece-style tokenizer.json files in the two layouts found on the Hub (transformers 4.x
LLaMA-2: Prepend+Replace normalizers; newer: Metaspace prepend_scheme=first), with reference ids/decodes from HF
tokenizers 0.23.2 itself. Run on the GPU image; writes $OUT/tok-spm-*/ (tokenizer_config.json added by hand)."""
import json,os
from tokenizers import Tokenizer
O=os.environ['OUT']
v={"<unk>":0,"<s>":1,"</s>":2}
for b in range(256): v["<0x%02X>"%b]=len(v)
for c in "abcdefghijklmnopqrstuvwxyz\u2581.,!'": v[c]=len(v)
M=[("\u2581","t"),("h","e"),("\u2581t","he"),("i","n"),("\u2581","a"),("a","t"),("\u2581","\u2581"),("\u2581\u2581","\u2581\u2581"),("o","n"),("e","r")]
for a,b in M: v.setdefault(a+b,len(v))
def mk(L):
  S={"type":"Strip","content":" ","start":1,"stop":0}
  return {"version":"1.0","truncation":None,"padding":None,
  "added_tokens":[{"id":i,"content":c,"single_word":False,"lstrip":False,"rstrip":False,"normalized":False,"special":True} for i,c in enumerate(["<unk>","<s>","</s>"])],
  "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"\u2581"},{"type":"Replace","pattern":{"String":" "},"content":"\u2581"}]} if L else None,
  "pre_tokenizer":None if L else {"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first","split":False},
  "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
  "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"\u2581"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},S]} if L else {"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first","split":False},
  "model":{"type":"BPE","dropout":None,"unk_token":"<unk>","continuing_subword_prefix":None,"end_of_word_suffix":None,"fuse_unk":True,"byte_fallback":True,"ignore_merges":False,"vocab":v,"merges":[[a,b] for a,b in M]}}
T=["the cat sat on the mat","  in  the   hat!","\u00dcber na\u00efve \u65e5\u672c \U0001F600 ZZ","<s>the</s> at<unk> x","","that's it, then."]
for n,L in [("tok-spm-legacy-json",True),("tok-spm-metaspace-json",False)]:
  j=mk(L); t=Tokenizer.from_str(json.dumps(j)); E=[t.encode(x).ids for x in T]
  r={"texts":T,"input_ids":E,"input_ids_no_special":[t.encode(x,add_special_tokens=False).ids for x in T],
     "decode_skip_special":[t.decode(i,skip_special_tokens=True) for i in E],"decode_keep_special":[t.decode(i,skip_special_tokens=False) for i in E]}
  os.makedirs(O+"/"+n,exist_ok=True)
  json.dump(j,open(O+"/"+n+"/tokenizer.json","w"),ensure_ascii=False,indent=1)
  json.dump(r,open(O+"/"+n+"/reference_tokenizer.json","w"),ensure_ascii=False,indent=1)
  print(n,E)
