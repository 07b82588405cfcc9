-- wrk script: every request carries its own DPoP proof (a proof works once), read from a file of one per line.
-- wrk -s bench/proofs.lua URL -- PROOFS_FILE TOKEN
local proofs, token, i = {}, nil, 0

function init(args)
  for line in io.lines(args[1]) do proofs[#proofs + 1] = line end
  token = args[2]
end

function request()
  i = i + 1
  if i > #proofs then i = 1 end -- past the end a proof repeats, is refused, and wrk counts the error
  return wrk.format(nil, nil, { ["Authorization"] = "DPoP " .. token, ["DPoP"] = proofs[i] })
end
