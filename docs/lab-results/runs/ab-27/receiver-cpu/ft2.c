#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); size_t total=(size_t)1<<30; char*buf=aligned_alloc(4096,4096); memset(buf,1,4096);
  int fd=open("/dev/shm/ft2",O_RDWR|O_CREAT|O_TRUNC,0600); ftruncate(fd,total);
  double t=now(), f=0;
  if(mode==1){ fallocate(fd,0,0,total); f=now()-t; }
  for(size_t o=0;o<total;o+=4096) pwrite(fd,buf,4096,o);
  printf("mode %d: fallocate %.3f s, total %.3f s\n",mode,f,now()-t);
  unlink("/dev/shm/ft2");
}
